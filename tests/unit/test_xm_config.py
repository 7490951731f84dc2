"""The xm config writer: golden files for xm and xl, read back by Xen's own parser."""

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.xm import params
from backends.xm.config import DiskLine, GuestConfig, disk_prefix, instance_disk_format, render
from tests import libxlutil
from virt.errors import InvalidParameter
from virt.objects import NIC, GuestKind

UUID = "8f14e45f-ceea-467f-a8f5-3c1d2e4b5a6c"
NICS = (NIC(mac="aa:00:00:12:34:56", bridge="xenbr0", ip="192.0.2.10"),
        NIC(mac="aa:00:00:12:34:57", bridge="br-int"))

CASES = {
    "pv-kernel": dict(
        kind=GuestKind.PV, memory_mb=512, vcpus=2, nics=NICS,
        params={"kernel_path": "/srv/xen/vmlinuz", "initrd_path": "/srv/xen/initrd.img",
                "kernel_args": "ro console=hvc0", "cpu_mask": "0-1,3"},
        disks=(("/var/lib/virt-driver/instances/u/disk", "qcow2", False),
               ("/dev/vg0/data", "raw-phy", False),
               ("/srv/xen/seed.img", "raw", True))),
    "pv-pygrub": dict(
        kind=GuestKind.PV, memory_mb=1024, vcpus=1, nics=NICS[:1],
        params={"bootloader": "/usr/bin/pygrub", "bootloader_args": "--entry=0 -q",
                "root_path": "/dev/xvda2", "on_crash": "preserve"},
        disks=(("/dev/vg0/root", "raw-phy", False),)),
    "hvm-full": dict(
        kind=GuestKind.HVM, memory_mb=2048, vcpus=4, nics=NICS, network_port=5901,
        vnc_password="s3cret-pw",
        params={"boot_order": "dc", "nic_type": "e1000", "device_model": "/usr/lib/xen/bin/qemu-dm",
                "cdrom_image_path": "/srv/iso/install.iso", "vnc_bind_address": "127.0.0.1",
                "pae": "false", "use_localtime": "no", "cpu_mask": "all"},
        disks=(("/var/lib/virt-driver/instances/u/disk", "qcow2", False),
               ("/dev/vg0/data", "raw-phy", False))),
    "hvm-minimal": dict(
        kind=GuestKind.HVM, memory_mb=256, vcpus=1, nics=NICS[1:],
        params={"nic_type": "paravirtual", "usb_tablet": "false", "disk_prefix": "sd"},
        disks=(("/var/lib/virt-driver/instances/u/disk", "raw", False),)),
}


def build(toolstack: str, case: dict) -> GuestConfig:
    values = params.check_syntax(case["kind"], case["params"])
    disks = []
    for path, fmt, readonly in case["disks"]:
        driver = "phy" if fmt == "raw-phy" else ("qemu" if toolstack == "xl" else "tap")
        if fmt == "qcow2" and toolstack == "xm":
            driver = "qemu"
        disks.append(DiskLine(path, disk_prefix(driver, toolstack, fmt.replace("-phy", "")),
                              readonly))
    return GuestConfig(toolstack=toolstack, name="web-01", uuid=UUID, kind=case["kind"],
                       memory_mb=case["memory_mb"], vcpus=case["vcpus"], values=values,
                       disks=tuple(disks), nics=case["nics"],
                       network_port=case.get("network_port"),
                       vnc_password=case.get("vnc_password"))


def xl_read(tmp_path, text: str) -> libxlutil.XlConfig:
    path = tmp_path / "guest.cfg"
    path.write_text(text)
    return libxlutil.XlConfig(str(path))


@pytest.mark.parametrize("toolstack", ["xm", "xl"])
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_golden_and_read_back_by_libxlutil(golden, tmp_path, toolstack, case_name):
    case = CASES[case_name]
    cfg = build(toolstack, case)
    text = render(cfg)
    golden(f"xm/golden/{case_name}.{toolstack}.cfg", text)
    with xl_read(tmp_path, text) as xl:
        assert xl.get_string("name") == "web-01"
        assert xl.get_string("uuid") == UUID
        assert xl.get_long("memory") == case["memory_mb"]
        assert xl.get_long("vcpus") == case["vcpus"]
        assert xl.get_string("on_poweroff") == "destroy"
        assert xl.get_string("on_crash") == case["params"].get("on_crash", "destroy")
        check_disks(xl, cfg, case)
        check_vifs(xl, cfg, case)
        if case["kind"] is GuestKind.PV:
            check_pv(xl, toolstack, case)
        else:
            check_hvm(xl, toolstack, case)
        assert xl.report() == "" or "deprecated" in xl.report().lower()


def check_disks(xl, cfg, case):
    specs = xl.get_list("disk")
    expected = list(case["disks"])
    if case["params"].get("cdrom_image_path"):
        expected.append((case["params"]["cdrom_image_path"], "cdrom", True))
    assert len(specs) == len(expected)
    hvm = case["kind"] is GuestKind.HVM
    prefix = case["params"].get("disk_prefix", "hd" if hvm else "xvd")
    skip_hdc = prefix == "hd" and "cdrom_image_path" in case["params"]
    names = iter(prefix + c for c in "abcdefgh" if not (skip_hdc and c == "c"))
    for spec, (path, fmt, readonly) in zip(specs, expected, strict=True):
        disk = xl.parse_disk(spec)
        assert disk.target == path
        assert disk.readwrite is not readonly
        if fmt == "cdrom":
            assert (disk.vdev, disk.is_cdrom, disk.format) == ("hdc", True, "raw")
            continue
        assert disk.is_cdrom is False
        assert disk.vdev == next(names)
        assert disk.format == ("qcow2" if fmt == "qcow2" else "raw")


def check_vifs(xl, cfg, case):
    vifs = xl.get_list("vif")
    assert len(vifs) == len(case["nics"])
    for vif, nic in zip(vifs, case["nics"], strict=True):
        fields = dict(item.split("=", 1) for item in vif.split(","))
        assert fields["mac"] == nic.mac and fields["bridge"] == nic.bridge
        assert fields.get("ip") == nic.ip
        if case["kind"] is GuestKind.HVM:
            nic_type = case["params"].get("nic_type", "rtl8139")
            if nic_type == "paravirtual":
                assert fields["type"] == ("vif" if cfg.toolstack == "xl" else "paravirtualized")
            else:
                assert (fields["model"], fields["type"]) == (nic_type, "ioemu")


def check_pv(xl, toolstack, case):
    p = case["params"]
    if "bootloader" in p:
        assert xl.get_string("bootloader") == p["bootloader"]
        assert xl.get_string("kernel") is None
        if toolstack == "xl":
            assert xl.get_list("bootloader_args") == p["bootloader_args"].split()
        else:
            assert xl.get_string("bootargs") == p["bootloader_args"]
    else:
        assert xl.get_string("kernel") == p["kernel_path"]
        assert xl.get_string("ramdisk") == p.get("initrd_path")
    assert xl.get_string("root") == p.get("root_path", "/dev/xvda1")
    assert xl.get_string("extra") == p.get("kernel_args")
    assert xl.get_string("cpus") == p.get("cpu_mask")


def check_hvm(xl, toolstack, case):
    p = case["params"]
    if toolstack == "xm":
        assert xl.get_string("kernel") == "/usr/lib/xen/boot/hvmloader"
        assert xl.get_string("builder") == "hvm"
        assert xl.get_string("device_model") == p.get("device_model")
    else:
        assert xl.get_string("type") == "hvm"
        assert xl.get_string("kernel") is None
        assert xl.get_string("device_model_override") == p.get("device_model")
    assert xl.get_string("boot") == p.get("boot_order", "c")
    assert xl.get_long("pae") == (0 if p.get("pae") == "false" else 1)
    assert xl.get_long("acpi") == 1
    assert xl.get_long("localtime") == (1 if p.get("use_localtime") in ("yes", "true") else 0)
    assert xl.get_long("vnc") == 1
    assert xl.get_string("vnclisten") == p.get("vnc_bind_address", "127.0.0.1")
    if case.get("network_port"):
        assert xl.get_long("vncdisplay") == case["network_port"] - 5900
        assert xl.get_long("vncunused") == 0
    else:
        assert xl.get_long("vncdisplay") is None and xl.get_long("vncunused") == 1
    assert xl.get_string("vncpasswd") == case.get("vnc_password")
    assert xl.get_string("serial") == "pty"
    tablet = p.get("usb_tablet") != "false"
    assert xl.get_string("usbdevice") == ("tablet" if tablet else None)


@pytest.mark.parametrize("bad", ["it's", 'say "hi"', "back\\slash", "new\nline", "tab\there",
                                 "bell\x07", "del\x7f", "caf\u00e9"])
@pytest.mark.parametrize("field, where", [
    ("kernel_args", "params"), ("root_path", "params"), ("bootloader_args", "params"),
])
def test_values_that_could_end_their_string_are_refused(bad, field, where):
    values = {"kernel_path": "/k", field: "/x" + bad if field == "root_path" else bad}
    with pytest.raises(InvalidParameter, match=field):
        params.check_syntax(GuestKind.PV, values)


def test_vnc_password_and_disk_path_injection_refused():
    case = CASES["hvm-full"]
    cfg = build("xl", case)
    with pytest.raises(InvalidParameter, match="vnc password"):
        render(GuestConfig(**{**cfg.__dict__, "vnc_password": "x'\nkernel = '/evil"}))
    with pytest.raises(InvalidParameter, match="disk 0 path"):
        render(GuestConfig(**{**cfg.__dict__, "disks": (DiskLine("/a',w'", "file"),)}))
    with pytest.raises(InvalidParameter, match="disk 0 path"):
        render(GuestConfig(**{**cfg.__dict__, "disks": (DiskLine("/a,hdb,w", "file"),)}))
    with pytest.raises(InvalidParameter, match="nic 0 bridge"):
        render(GuestConfig(**{**cfg.__dict__, "nics": (NIC("aa:00:00:00:00:01", "br,x"),)}))
    with pytest.raises(InvalidParameter, match="nic 0 ip"):
        render(GuestConfig(**{**cfg.__dict__, "nics": (NIC("aa:00:00:00:00:01", ip="1.2.3"),)}))
    with pytest.raises(InvalidParameter, match="name"):
        render(GuestConfig(**{**cfg.__dict__, "name": "a'b"}))
    with pytest.raises(InvalidParameter, match="uuid"):
        render(GuestConfig(**{**cfg.__dict__, "uuid": "not-a-uuid"}))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_kernel_args_are_refused_or_read_back_exactly(tmp_path_factory, args):
    try:
        values = params.check_syntax(GuestKind.PV, {"kernel_path": "/k", "kernel_args": args})
    except InvalidParameter as exc:
        assert "kernel_args" in str(exc)
        return
    cfg = GuestConfig("xl", "g", UUID, GuestKind.PV, 128, 1, values)
    text = render(cfg)
    with xl_read(tmp_path_factory.mktemp("h"), text) as xl:
        assert xl.get_string("extra") == (args or None)  # empty means not set


@pytest.mark.parametrize("kind, values, message", [
    (GuestKind.PV, {}, "params['kernel_path'] is required"),
    (GuestKind.PV, {"kernel_path": "vmlinuz"},
     "params['kernel_path'] 'vmlinuz': use an absolute path"),
    (GuestKind.PV, {"kernel_path": "/k", "boot_order": "c"},
     "params['boot_order'] is not a known param for pv guests"),
    (GuestKind.HVM, {"boot_order": "xz"},
     "params['boot_order'] 'xz': use one or more of a, c, d, n"),
    (GuestKind.HVM, {"nic_type": "virtio"}, "params['nic_type'] 'virtio': use one of rtl8139"),
    (GuestKind.HVM, {"vnc_bind_address": "localhost"}, "use an IPv4 or IPv6 address"),
    (GuestKind.HVM, {"pae": "maybe"}, "params['pae'] 'maybe': use true or false"),
    (GuestKind.HVM, {"cpu_mask": "0-"}, "params['cpu_mask'] '0-'"),
    (GuestKind.HVM, {"on_reboot": "explode"}, "params['on_reboot'] 'explode': use one of destroy"),
    (GuestKind.HVM, {"disk_prefix": "vd"},
     "params['disk_prefix'] 'vd': use one of xvd, hd, sd"),
])
def test_syntax_checks(kind, values, message):
    with pytest.raises(InvalidParameter, match=re.escape(message)):
        params.check_syntax(kind, values)


@pytest.mark.parametrize("toolstack", ["xm", "xl"])
@pytest.mark.parametrize("listen, password, ok", [
    (None, None, True),                     # the default is loopback
    ("::1", None, True),
    ("0.0.0.0", None, False),
    ("192.0.2.7", None, False),
    ("0.0.0.0", "s3cret", True),
])
def test_vnc_beyond_loopback_needs_a_password(toolstack, listen, password, ok):
    case = dict(CASES["hvm-minimal"], vnc_password=password)
    if listen is not None:
        case["params"] = {**case["params"], "vnc_bind_address": listen}
    if ok:
        assert f"vnclisten = '{listen or '127.0.0.1'}'" in render(build(toolstack, case))
    else:
        with pytest.raises(InvalidParameter, match=re.escape(
                f"params['vnc_bind_address'] '{listen}': VNC beyond loopback needs a password")):
            render(build(toolstack, case))


def test_empty_value_means_default():
    assert params.check_syntax(GuestKind.HVM, {"boot_order": ""})["boot_order"] == "c"
    assert params.check_syntax(GuestKind.PV, {"kernel_path": "/k", "root_path": ""})[
        "root_path"] == "/dev/xvda1"


def test_node_checks_files_exist(tmp_path):
    kernel = tmp_path / "vmlinuz"
    values = params.check_syntax(GuestKind.PV, {"kernel_path": str(kernel)})
    with pytest.raises(InvalidParameter, match=r"kernel_path'\] .*does not exist on this host"):
        params.check_node(values)
    kernel.write_bytes(b"\0")
    params.check_node(values)


def test_disk_limit_past_ide_is_a_clear_error():
    cfg = build("xl", CASES["hvm-minimal"])
    four = tuple(DiskLine(f"/srv/d{i}", "raw") for i in range(4))
    values = {**cfg.values, "disk_prefix": "hd"}
    render(GuestConfig(**{**cfg.__dict__, "disks": four, "values": values}))
    with pytest.raises(InvalidParameter, match="the ide bus holds at most 4 disks"):
        render(GuestConfig(**{**cfg.__dict__, "disks": four + four[:1], "values": values}))
    with_cdrom = {**values, "cdrom_image_path": "/srv/iso/x.iso"}
    with pytest.raises(InvalidParameter, match="the ide bus holds at most 4 disks"):
        render(GuestConfig(**{**cfg.__dict__, "disks": four, "values": with_cdrom}))


def test_disk_prefix_policy():
    assert disk_prefix("qemu", "xl", "qcow2") == "qcow2"
    assert disk_prefix("tap", "xm", "raw") == "tap:aio"
    assert disk_prefix("tap2", "xl", "raw") == "tap2:tapdisk:aio"
    assert disk_prefix(None, "xm", "raw") == "file"
    assert disk_prefix("phy", "xm", "raw") == "phy"
    with pytest.raises(InvalidParameter, match="reads raw only"):
        disk_prefix("file", "xl", "qcow2")
    assert instance_disk_format("qemu", "xl") == "qcow2"
    assert instance_disk_format("tap2", "xl") == "raw"
    assert instance_disk_format("file", "xm") == "raw"


def test_regen_flag_documented():
    assert os.path.exists(os.path.join(os.path.dirname(__file__), "..", "conftest.py"))


@pytest.mark.parametrize("toolstack", ["xm", "xl"])
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_parse_reads_back_what_libxlutil_reads(tmp_path, toolstack, case_name):
    from backends.xm.config import parse
    text = render(build(toolstack, CASES[case_name]))
    ours = parse(text)
    with xl_read(tmp_path, text) as xl:
        for key, value in ours.items():
            if key.startswith("meta:"):
                continue
            if isinstance(value, list):
                assert xl.get_list(key) == value, key
            elif isinstance(value, int):
                assert xl.get_long(key) == value, key
            else:
                assert xl.get_string(key) == value, key
    with pytest.raises(InvalidParameter, match="not written by virt-driver"):
        parse(text + "kernel = '/a' + '/b'\n")


FREE_TEXT = {GuestKind.PV: ["kernel_args", "bootloader_args", "root_path", "kernel_path"],
             GuestKind.HVM: ["device_model", "vnc_bind_address", "boot_order", "cpu_mask"]}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([(k, f) for k, fields in FREE_TEXT.items() for f in fields]),
       st.text(alphabet=st.characters(max_codepoint=0x7f), max_size=30),
       st.sampled_from(["xm", "xl"]))
def test_no_value_adds_or_changes_another_key(tmp_path_factory, field_kind, value, toolstack):
    from backends.xm.config import parse
    kind, field = field_kind
    base = {"kernel_path": "/k"} if kind is GuestKind.PV else {}
    baseline = render(GuestConfig(toolstack, "g", UUID, kind, 128, 1,
                                  params.check_syntax(kind, base)))
    try:
        values = params.check_syntax(kind, {**base, field: value})
    except InvalidParameter as exc:
        assert field in str(exc)
        return
    text = render(GuestConfig(toolstack, "g", UUID, kind, 128, 1, values))
    ours, before = parse(text), parse(baseline)
    assert ours.keys() - {"bootloader", "bootargs", "bootloader_args", "extra", "cpus",
                          "device_model", "device_model_override"} <= before.keys()
    assert {k: v for k, v in ours.items() if k in ("name", "uuid", "memory", "vcpus")} == {
        k: v for k, v in before.items() if k in ("name", "uuid", "memory", "vcpus")}
    with xl_read(tmp_path_factory.mktemp("v"), text) as xl:
        assert xl.get_string("name") == "g" and xl.get_long("memory") == 128
