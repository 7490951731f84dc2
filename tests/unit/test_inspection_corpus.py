"""inspect_untrusted against a corpus made here, as qemu's iotests and the
OpenStack format-inspector tests make theirs: qemu-img create/convert with
options, then byte edits with struct for headers qemu-img will not write.

Every hostile case must be refused for its own reason; every legit image of
each accepted format must be accepted with its facts.
"""

import os
import socket
import struct
import subprocess
import sys
import uuid
import zlib
from dataclasses import dataclass, field

import pytest

from virt import images
from virt.errors import UnsafeImage
from virt.units import MiB

SECTOR = 512
ISO_PVD = 32 << 10  # the first volume descriptor of ISO 9660
VHD_TYPE, VHD_CHECKSUM = 60, 64  # footer fields


def qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def create(d, fmt, *opts, size="1M", name=None):
    path = str(d / (name or f"img.{fmt}"))
    qemu_img("create", "-q", "-f", fmt, *opts, path, size)
    return path


def put(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return path


def get(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def raw(d, size=MiB, name="disk.raw"):
    path = str(d / name)
    with open(path, "wb") as f:
        f.truncate(size)
    return put(path, 4 * SECTOR, b"guest data" * 100)


def raw_with(magic, offset=0):
    return lambda d: put(raw(d), offset, magic)


def converted(fmt, *opts, source=None):
    """A `fmt` image holding a raw disk with data (or `source`'s content)."""
    def make(d):
        src = source(d) if source else raw(d, name="src.raw")
        dst = str(d / f"conv.{fmt}")
        qemu_img("convert", "-q", "-f", "raw", "-O", fmt, *opts, src, dst)
        return dst
    return make


def renamed(maker):
    """The same bytes under a neutral name (a declared format is all we go by)."""
    def make(d):
        path = maker(d)
        os.rename(path, d / "upload")
        return str(d / "upload")
    return make


def qcow2_incompatible(bits):
    def make(d):
        path = create(d, "qcow2")
        (old,) = struct.unpack(">Q", get(path, 72, 8))
        return put(path, 72, struct.pack(">Q", old | bits))
    return make


def qcow2_field(offset, fmt, value):
    return lambda d: put(create(d, "qcow2"), offset, struct.pack(fmt, value))


def luks(d):
    """A LUKS1 header as cryptsetup writes it (qemu-img's own key benchmark is slow)."""
    header = struct.pack(">6sH32s32s32sII20s32sI40s", b"LUKS\xba\xbe", 1, b"aes",
                         b"xts-plain64", b"sha256", 4096, 64, os.urandom(20), os.urandom(32),
                         1000, str(uuid.uuid4()).encode())
    return put(raw(d, name="img.luks"), 0, header)


def iso_descriptors(path):
    """An ISO 9660 primary volume descriptor and set terminator, as mkisofs writes."""
    blocks = os.path.getsize(path) // 2048
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[80:88] = struct.pack("<I", blocks) + struct.pack(">I", blocks)
    pvd[128:132] = struct.pack("<H", 2048) + struct.pack(">H", 2048)
    put(path, ISO_PVD, bytes(pvd))
    return put(path, ISO_PVD + 2048, b"\xffCD001\x01")


def with_iso(maker):
    return lambda d: iso_descriptors(maker(d))


def mbr(d, size=MiB):
    path = raw(d, size)
    entry = struct.pack("<B3sB3sII", 0x80, b"\x20\x21\x00", 0x83, b"\xfe\xff\xff",
                        2048, size // SECTOR - 2048)
    put(path, 446, entry)
    return put(path, 510, b"\x55\xaa")


def gpt(d, size=MiB):
    """A protective MBR, a GPT header and one Linux partition, CRCs included."""
    path = raw(d, size)
    sectors = size // SECTOR
    put(path, 446, struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff",
                               1, sectors - 1))
    put(path, 510, b"\x55\xaa")
    linux = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le
    entries = (linux + uuid.uuid4().bytes_le + struct.pack("<QQQ", 34, sectors - 34, 0)
               + "root".encode("utf-16-le").ljust(72, b"\0")).ljust(128 * 128, b"\0")
    header = struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, 1,
                         sectors - 1, 34, sectors - 34, uuid.uuid4().bytes_le, 2, 128, 128,
                         zlib.crc32(entries))
    header = header[:16] + struct.pack("<I", zlib.crc32(header)) + header[20:]
    put(path, SECTOR, header)
    return put(path, 2 * SECTOR, entries)


def vhd_footer_type(disk_type, subformat="dynamic", where=("head", "tail")):
    """A VHD whose footer (one or both copies) says `disk_type`, checksum fixed."""
    def make(d):
        path = create(d, "vpc", "-o", f"subformat={subformat}")
        size = os.path.getsize(path)
        for offset in [o for w, o in (("head", 0), ("tail", size - SECTOR)) if w in where]:
            footer = bytearray(get(path, offset, SECTOR))
            footer[VHD_TYPE:VHD_TYPE + 4] = struct.pack(">I", disk_type)
            footer[VHD_CHECKSUM:VHD_CHECKSUM + 4] = b"\0\0\0\0"
            footer[VHD_CHECKSUM:VHD_CHECKSUM + 4] = struct.pack(">I", ~sum(footer) & 0xFFFFFFFF)
            put(path, offset, bytes(footer))
        return path
    return make


def vmdk_descriptor(create_type, extent):
    def make(d):
        put(raw(d, name="neighbour.raw"), 0, b"NEIGHBOUR" * 100)
        path = str(d / "desc.vmdk")
        with open(path, "w") as f:
            f.write(f'# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
                    f'createType="{create_type}"\n\n{extent}\n\nddb.adapterType = "ide"\n')
        return path
    return make


def vmdk_with_parent(d):
    parent = create(d, "vmdk", name="parent.vmdk")
    return create(d, "vmdk", "-b", parent, "-F", "vmdk", name="child.vmdk")


def qcow2_with_backing(target, *extra):
    return lambda d: create(d, "qcow2", "-u", "-b", target, "-F", "raw", *extra)


def qcow2_with_data_file(*opts):
    return lambda d: create(d, "qcow2", "-o", ",".join([f"data_file={d / 'host-data'}", *opts]))


def qcow2_holding_qcow2(d):
    """A qcow2 whose guest wrote a qcow2 image at the start of its own disk."""
    inner = create(d, "qcow2", name="inner")
    with open(inner, "rb") as f:
        guest_disk = lambda d: put(raw(d, name="src.raw"), 0, f.read())  # noqa: E731
        return converted("qcow2", source=guest_disk)(d)


@dataclass
class Case:
    id: str
    maker: object
    declared: str
    reason: str = ""  # a regular expression the refusal must match
    kwargs: dict = field(default_factory=dict)


HOSTILE = [
    # Declared raw, carrying another format where that format has it.
    Case("raw-is-qcow2-v3", lambda d: create(d, "qcow2"), "raw", "content is qcow2"),
    Case("raw-is-qcow2-v2", lambda d: create(d, "qcow2", "-o", "compat=0.10"), "raw",
         "content is qcow2"),
    Case("raw-is-qcow2-backing", qcow2_with_backing("/etc/shadow"), "raw", "content is qcow2"),
    Case("raw-is-qcow-v1", lambda d: create(d, "qcow"), "raw", "content is qcow2"),
    Case("raw-is-qed", lambda d: create(d, "qed"), "raw", "content is qed"),
    Case("raw-is-vmdk-sparse", lambda d: create(d, "vmdk"), "raw", "content is vmdk"),
    Case("raw-is-vmdk-stream", converted("vmdk", "-o", "subformat=streamOptimized"), "raw",
         "content is vmdk"),
    Case("raw-is-vmdk-descriptor", vmdk_descriptor("monolithicFlat", 'RW 2 FLAT "/etc/shadow" 0'),
         "raw", "content is vmdk"),
    Case("raw-is-vhd-dynamic", lambda d: create(d, "vpc"), "raw", "content is vhd"),
    Case("raw-is-vhd-fixed", lambda d: create(d, "vpc", "-o", "subformat=fixed"), "raw",
         r"content is vhd \(a footer at its end\)"),
    Case("raw-is-vhdx", lambda d: create(d, "vhdx"), "raw", "content is vhdx"),
    Case("raw-is-vdi", lambda d: create(d, "vdi"), "raw", "content is vdi"),
    Case("raw-is-luks", luks, "raw", "content is luks"),
    # Only the magic, at the offset qemu's probe looks at, in a raw disk.
    Case("raw-magic-qcow2", raw_with(b"QFI\xfb\0\0\0\3"), "raw", "content is qcow2"),
    Case("raw-magic-qed", raw_with(b"QED\0"), "raw", "content is qed"),
    Case("raw-magic-vmdk", raw_with(b"KDMV"), "raw", "content is vmdk"),
    Case("raw-magic-vmdk3", raw_with(b"COWD"), "raw", "content is vmdk version 3"),
    Case("raw-magic-vhd", raw_with(b"conectix"), "raw", "content is vhd"),
    Case("raw-magic-vhdx", raw_with(b"vhdxfile"), "raw", "content is vhdx"),
    Case("raw-magic-vdi", raw_with(struct.pack("<I", 0xBEDA107F), 0x40), "raw", "content is vdi"),
    Case("raw-magic-luks", raw_with(b"LUKS\xba\xbe\0\1"), "raw", "content is luks"),
    Case("raw-magic-parallels", raw_with(b"WithoutFreeSpace"), "raw", "content is parallels"),
    Case("raw-magic-parallels-ext", raw_with(b"WithouFreSpacExt"), "raw",
         "content is parallels"),
    Case("raw-magic-bochs", raw_with(b"Bochs Virtual HD Image\0"), "raw", "content is bochs"),
    Case("raw-magic-cloop", raw_with(b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop"), "raw",
         "content is cloop"),
    # An ISO with another format in its system area.
    Case("iso-with-qcow2-as-raw", with_iso(lambda d: create(d, "qcow2")), "raw",
         r"several formats at once \(iso, qcow2\)"),
    Case("iso-with-qcow2-as-qcow2", with_iso(lambda d: create(d, "qcow2")), "qcow2",
         r"several formats at once \(iso, qcow2\)"),
    Case("iso-with-vmdk-as-raw", with_iso(lambda d: create(d, "vmdk")), "raw",
         r"several formats at once \(iso, vmdk\)"),
    Case("iso-with-vmdk-as-vmdk", with_iso(lambda d: create(d, "vmdk")), "vmdk",
         r"several formats at once \(iso, vmdk\)"),
    Case("iso-with-vdi-as-raw", with_iso(lambda d: create(d, "vdi", size="2M")), "raw",
         r"several formats at once \(iso, vdi\)"),
    # qcow2 pointing at other files or using features nobody checked.
    Case("qcow2-backing-absolute", qcow2_with_backing("/etc/shadow"), "qcow2", "backing_file"),
    Case("qcow2-backing-relative", qcow2_with_backing("neighbour.raw"), "qcow2", "backing_file"),
    Case("qcow2-backing-json", qcow2_with_backing(
        'json:{"driver": "raw", "file": {"driver": "file", "filename": "/etc/shadow"}}'),
        "qcow2", "backing_file"),
    Case("qcow2-backing-host-device", qcow2_with_backing("/dev/sda"), "qcow2", "backing_file"),
    Case("qcow2-data-file", qcow2_with_data_file(), "qcow2", "data_file"),
    Case("qcow2-data-file-raw", qcow2_with_data_file("data_file_raw=on"), "qcow2", "data_file"),
    Case("qcow2-data-file-bit-only", qcow2_incompatible(1 << 2), "qcow2", "data_file"),
    Case("qcow2-incompatible-bit-4", lambda d: create(d, "qcow2", "-o", "extended_l2=on"),
         "qcow2", "unknown_features"),
    Case("qcow2-incompatible-bit-5", qcow2_incompatible(1 << 5), "qcow2", "unknown_features"),
    Case("qcow2-incompatible-bit-63", qcow2_incompatible(1 << 63), "qcow2", "unknown_features"),
    Case("qcow2-version-4", qcow2_field(4, ">I", 4), "qcow2", "unknown_features"),
    Case("qcow-v1-as-qcow2", lambda d: create(d, "qcow"), "qcow2", "unknown_features"),
    Case("qcow2-1-PiB", lambda d: create(d, "qcow2", size=str(1 << 50)), "qcow2",
         "above the limit"),
    Case("qcow2-size-field-2-EiB", qcow2_field(24, ">Q", 1 << 61), "qcow2",
         "cannot be read as qcow2|resource limit|above the limit"),
    Case("qcow2-overlay-with-data-file", lambda d: create(
        d, "qcow2", "-u", "-b", "parent", "-F", "qcow2", "-o", f"data_file={d / 'host-data'}"),
        "qcow2", "data_file", {"allow_backing": True}),
    Case("qcow2-content-is-raw", raw, "qcow2",
         r"declared qcow2 but has no qcow2 header \(its content is raw\)"),
    Case("qcow2-content-is-vmdk", lambda d: create(d, "vmdk"), "qcow2", "content is vmdk"),
    Case("qcow2-content-is-qed", lambda d: create(d, "qed"), "qcow2", "content is qed"),
    Case("qcow2-content-is-luks", luks, "qcow2", "content is luks"),
    # vmdk whose extents or parent could be any file.
    Case("vmdk-monolithic-flat", lambda d: create(d, "vmdk", "-o", "subformat=monolithicFlat"),
         "vmdk", "descriptor"),
    Case("vmdk-two-gb-sparse",
         lambda d: create(d, "vmdk", "-o", "subformat=twoGbMaxExtentSparse"), "vmdk",
         "descriptor"),
    Case("vmdk-two-gb-flat",
         lambda d: create(d, "vmdk", "-o", "subformat=twoGbMaxExtentFlat"), "vmdk",
         "descriptor"),
    Case("vmdk-descriptor-host-file", vmdk_descriptor("monolithicFlat",
         'RW 2 FLAT "/etc/shadow" 0'), "vmdk", "descriptor"),
    Case("vmdk-descriptor-claims-sparse-host-file", vmdk_descriptor(
        "monolithicSparse", 'RW 2 SPARSE "/etc/shadow"'), "vmdk", "descriptor"),
    Case("vmdk-descriptor-claims-sparse-neighbour", vmdk_descriptor(
        "monolithicSparse", 'RW 2048 FLAT "neighbour.raw" 0'), "vmdk", "descriptor file"),
    Case("vmdk-parent-file-name-hint", vmdk_with_parent, "vmdk", "backing file"),
    Case("vmdk-parent-with-allow-backing", vmdk_with_parent, "vmdk", "backing file",
         {"allow_backing": True}),
    Case("vmdk-content-is-qcow2", lambda d: create(d, "qcow2"), "vmdk", "content is qcow2"),
    Case("vmdk-content-is-raw", raw, "vmdk", "content is raw"),
    # VHD with a parent or a footer qemu would read some other way.
    Case("vhd-differencing-dynamic", vhd_footer_type(4), "vpc", "differencing VHD"),
    Case("vhd-differencing-fixed", vhd_footer_type(4, "fixed", ("tail",)), "vpc",
         "differencing VHD"),
    Case("vhd-differencing-end-copy-only", vhd_footer_type(4, "dynamic", ("tail",)), "vpc",
         "differencing VHD"),
    Case("vhd-unknown-disk-type", vhd_footer_type(7), "vpc", "disk type 7 is unknown"),
    Case("vhd-fixed-payload-is-qcow2", converted(
        "vpc", "-o", "subformat=fixed", source=lambda d: create(d, "qcow2", name="inner")),
        "vpc", "content is qcow2"),
    Case("vhd-content-is-raw", raw, "vpc", "content is raw"),
    Case("vhd-content-is-qcow2", lambda d: create(d, "qcow2"), "vpc", "content is qcow2"),
    # vhdx
    Case("vhdx-content-is-raw", raw, "vhdx", "content is raw"),
    Case("vhdx-content-is-qcow2", lambda d: create(d, "qcow2"), "vhdx", "content is qcow2"),
    Case("vhdx-64-TiB", lambda d: create(d, "vhdx", size="64T"), "vhdx", "above the limit"),
    # Sizes over the store's limit in every format.
    Case("raw-2-TiB", lambda d: raw(d, 2 << 40), "raw", "above the limit"),
    Case("vmdk-2-TiB", lambda d: create(d, "vmdk", size="2T"), "vmdk", "above the limit"),
    Case("vhd-2-TiB", lambda d: create(d, "vpc", size="1999G"), "vpc", "above the limit"),
]

LEGIT = [
    Case("raw", raw, "raw"),
    Case("raw-with-mbr", mbr, "raw"),
    Case("raw-with-gpt", gpt, "raw"),
    Case("raw-iso", lambda d: iso_descriptors(raw(d)), "raw"),
    Case("raw-hybrid-iso", lambda d: iso_descriptors(mbr(d)), "raw"),
    Case("qcow2-v2", converted("qcow2", "-o", "compat=0.10"), "qcow2"),
    Case("qcow2-v3", converted("qcow2"), "qcow2"),
    Case("qcow2-compressed", converted("qcow2", "-c"), "qcow2"),
    Case("qcow2-compressed-zstd", converted("qcow2", "-c", "-o", "compression_type=zstd"),
         "qcow2"),
    Case("qcow2-lazy-refcounts", converted("qcow2", "-o", "lazy_refcounts=on"), "qcow2"),
    Case("qcow2-holding-a-qcow2", qcow2_holding_qcow2, "qcow2"),
    Case("qcow2-chain-overlay", qcow2_with_backing("/var/lib/other-host/base"), "qcow2",
         kwargs={"allow_backing": True}),
    Case("vmdk-monolithic-sparse", converted("vmdk"), "vmdk"),
    Case("vmdk-stream-optimized", converted("vmdk", "-o", "subformat=streamOptimized"), "vmdk"),
    Case("vpc-dynamic", converted("vpc"), "vpc"),
    Case("vpc-fixed", converted("vpc", "-o", "subformat=fixed"), "vpc"),
    Case("vpc-fixed-with-mbr", converted("vpc", "-o", "subformat=fixed", source=mbr), "vpc"),
    Case("vhdx", converted("vhdx"), "vhdx"),
    Case("vhdx-small-blocks", converted("vhdx", "-o", "block_size=1M"), "vhdx"),
]


def ids(cases):
    return [c.id for c in cases]


@pytest.mark.parametrize("case", HOSTILE, ids=ids(HOSTILE))
def test_hostile_image_is_refused_for_its_reason(tmp_path, case):
    path = renamed(case.maker)(tmp_path)
    kwargs = {"max_virtual_size": images.DEFAULT_MAX_VIRTUAL_SIZE, **case.kwargs}
    with pytest.raises(UnsafeImage, match=case.reason) as exc:
        images.inspect_untrusted(path, case.declared, **kwargs)
    assert str(exc.value).startswith("image upload refused: ")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("case", LEGIT, ids=ids(LEGIT))
def test_legit_image_is_accepted(tmp_path, case):
    path = renamed(case.maker)(tmp_path)
    info = images.inspect_untrusted(path, case.declared,
                                    images.DEFAULT_MAX_VIRTUAL_SIZE, **case.kwargs)
    assert info.format == case.declared
    assert info.virtual_size >= MiB


# Formats that name host resources or that are never accepted: refused
# before anything opens the path or starts qemu-img.
NOT_IMAGE_FORMATS = ["file", "host_device", "host_cdrom", "blkdebug", "null-co", "nbd", "ssh",
                     "json:{\"driver\": \"file\"}", "qcow", "qed", "vdi", "luks", "iso",
                     "parallels", "vvfat", "RAW", ""]


_AUDIT = {"armed": False, "path": None, "seen": []}


def _audit_hook(event, args):
    if not _AUDIT["armed"]:
        return
    if event == "subprocess.Popen" or (event == "open" and args[0] == _AUDIT["path"]):
        _AUDIT["seen"].append(event)


sys.addaudithook(_audit_hook)  # hooks cannot be removed: one for the module


@pytest.fixture
def audited():
    """Returns a function that runs a call and lists its opens of `path` and its children."""
    def run(call, path):
        _AUDIT.update(armed=True, path=path, seen=[])
        try:
            call()
        finally:
            _AUDIT["armed"] = False
        return _AUDIT["seen"]
    return run


@pytest.mark.parametrize("fmt", NOT_IMAGE_FORMATS)
def test_a_format_outside_the_list_is_refused_before_any_read(tmp_path, fmt, audited):
    path = create(tmp_path, "qcow2")
    with pytest.raises(UnsafeImage, match="is not an image format; use one of raw, qcow2"):
        assert audited(lambda: images.inspect_untrusted(path, fmt), path) == []
    assert audited(lambda: images.inspect_untrusted(path, "qcow2"), path)  # the control


def special_file(kind, d):
    target = create(d, "qcow2")
    path = str(d / "upload")
    if kind == "symlink":
        os.symlink(target, path)
    elif kind == "fifo":
        os.mkfifo(path)  # nobody writes: a blocking read would hang
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "socket":
        socket.socket(socket.AF_UNIX).bind(path)
    else:
        return "/dev/null"
    return path


@pytest.mark.parametrize("kind, reason", [
    ("symlink", "a symbolic link"), ("fifo", "a FIFO"), ("directory", "a directory"),
    ("socket", "a socket"), ("device", "a character device")])
def test_only_a_regular_file_is_read(tmp_path, kind, reason, audited):
    path = special_file(kind, tmp_path)
    seen = []
    with pytest.raises(UnsafeImage, match=f"it is {reason}, not a regular file"):
        seen = audited(lambda: images.inspect_untrusted(path, "qcow2"), path)
    assert seen == [] or seen == ["open"]  # at most the refusing open, never qemu-img
