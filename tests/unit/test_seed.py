"""virt.seed and virt.seedinput: inputs refused with a clear message, files cloud-init
reads, the ISO as blkid and a Rock Ridge reader see it, the record a hard reboot uses.

Keys come from the real ssh-keygen, hashes from the real openssl.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess

import pycdlib
import pytest
import yaml

from virt import seed, seedinput
from virt.errors import InvalidParameter
from virt.instancefiles import InstanceFiles
from virt.objects import NIC, Instance, SeedConfig

UUID = "3f0e8a51-8d7c-4a7e-9a59-6c1d8b1f0e21"
MAC0, MAC1 = "52:54:00:5e:ed:01", "52:54:00:5e:ed:02"
ONE_NIC = (NIC(mac=MAC0),)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Public and private key text of a fresh ed25519 and rsa pair."""
    directory = tmp_path_factory.mktemp("keys")
    found = {}
    for kind in ("ed25519", "rsa"):
        path = directory / kind
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"seed-{kind}",
                        "-f", str(path)], check=True)
        found[kind] = (path.with_suffix(".pub").read_text().strip(), path.read_text())
    return found


def _instance(name="seed-vm", **seed_fields) -> Instance:
    return Instance(name=name, uuid=UUID, seed=SeedConfig(**seed_fields))


def _plan(nics=ONE_NIC, name="seed-vm", **seed_fields) -> seed.SeedPlan:
    return seed.plan(_instance(name, **seed_fields), list(nics))


# -- refused inputs -------------------------------------------------------------------

def _refused(match, nics=ONE_NIC, **fields):
    with pytest.raises(InvalidParameter, match=match):
        _plan(nics, **fields)


def test_a_private_key_is_refused_and_the_message_asks_for_the_pub_file(keys):
    _refused(r"ssh_keys\[0\] is a private key: give the public key \(the \.pub file\)",
             ssh_keys=(keys["ed25519"][1],))


@pytest.mark.parametrize("line, match", [
    ("hello world", "not an OpenSSH public key"),
    ("ssh-ed25519", "not an OpenSSH public key"),
    ('command="rm -rf /" ssh-ed25519 AAAA', "not an OpenSSH public key"),
    ("ssh-ed25519 !!!notbase64", "not a ssh-ed25519 key"),
    ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "not a ssh-ed25519 key"),  # an rsa blob
    ("ssh-ed25519 AAAA\nssh-rsa BBBB", "one printable line per key"),
])
def test_lines_that_are_not_public_keys_are_refused(line, match):
    _refused(match, ssh_keys=(line,))


def test_a_key_of_another_type_than_it_claims_is_refused(keys):
    _type, blob, _comment = keys["rsa"][0].split()
    _refused("not a ssh-ed25519 key", ssh_keys=(f"ssh-ed25519 {blob}",))


def test_real_public_keys_are_taken_as_they_are(keys):
    plan = _plan(ssh_keys=(keys["ed25519"][0], "  " + keys["rsa"][0] + "  "))
    assert plan.ssh_keys == (keys["ed25519"][0], keys["rsa"][0])


def test_too_many_keys_are_refused(keys):
    _refused("33 keys; give at most 32", ssh_keys=(keys["ed25519"][0],) * 33)


@pytest.mark.parametrize("hostname", ["-web", "web-", "we b", "a" * 64, "web..x", "wéb",
                                      "x" * 250 + ".com", ""])
def test_a_hostname_that_is_not_a_hostname_is_refused(hostname):
    _refused("seed hostname .*: use dot-separated labels", hostname=hostname)


def test_the_default_hostname_comes_from_the_instance_name():
    assert _plan(name="Web_01.example").hostname == "web-01.example"
    assert _plan(hostname="DB-1.Example.org").hostname == "db-1.example.org"


def test_user_data_over_the_limit_is_refused():
    data = "#cloud-config\n" + "#" * seedinput.MAX_USER_DATA
    _refused(rf"user_data is {len(data)} bytes: give at most 65536", user_data=data)


@pytest.mark.parametrize("data, match", [
    ("hello: world\n", "begin with '#cloud-config'"),
    ("#cloud-config\nruncmd: [unclosed\n", "not valid YAML at line"),
    ("#cloud-config\n- a\n- b\n", "must be a YAML mapping"),
    ("#cloud-config\na: \x01\n", "control characters"),
    (b"#!/bin/sh\n\xff\xfe", "not UTF-8"),
])
def test_user_data_that_is_neither_cloud_config_nor_a_script_is_refused(data, match):
    _refused(match, user_data=data)


def test_cloud_config_and_scripts_are_taken():
    assert _plan(user_data="#cloud-config\nruncmd: [[true]]\n").user_data.startswith("#cloud")
    assert _plan(user_data="#!/bin/sh\necho hi\n").user_data == "#!/bin/sh\necho hi\n"


def test_a_clear_password_is_refused_where_a_hash_is_expected():
    _refused(r"password_hash: use a SHA-512 crypt hash", password_hash="secret")


def test_hash_password_makes_a_salted_sha512_crypt_hash_openssl_verifies():
    hashed = seedinput.hash_password("correct horse")
    assert hashed.startswith("$6$") and "correct" not in hashed
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                           input=b"correct horse", capture_output=True, check=True)
    assert again.stdout.decode().strip() == hashed
    assert seedinput.hash_password("correct horse") != hashed  # a new salt each time
    with pytest.raises(InvalidParameter, match="password: use one line"):
        seedinput.hash_password("two\nlines")


@pytest.mark.parametrize("nics, fields, match", [
    ((NIC(mac=MAC0, ip="10.0.0.300/24"),), {}, r"nics\[0\].ip .*: use an address"),
    ((NIC(mac=MAC0, ip="10.0.0.0/24"),), {}, "network's own or broadcast"),
    ((NIC(mac=MAC0, ip="10.0.0.5/32"),), {}, "network's own or broadcast"),
    ((NIC(mac=MAC0),), {"gateway": "10.0.0.1"}, "no NIC has a static address in its network"),
    ((NIC(mac=MAC0, ip="10.0.0.5/24"),), {"gateway": "10.9.0.1"}, "no NIC has a static"),
    ((NIC(mac=MAC0),), {"nameservers": ("8.8.8.8.8",)}, r"nameservers\[0\]"),
    ((NIC(mac="zz"),), {}, r"nics\[0\].mac"),
])
def test_bad_network_input_is_refused(nics, fields, match):
    _refused(match, nics=nics, **fields)


def test_an_unknown_format_is_refused():
    _refused("seed format 'iso': use nocloud or configdrive", format="iso")


# -- what cloud-init reads ----------------------------------------------------------

def test_nocloud_files(keys):
    plan = _plan(hostname="web", ssh_keys=(keys["ed25519"][0],),
                 user_data="#cloud-config\nruncmd: [[touch, /ran]]\n",
                 password_hash=seedinput.hash_password("pw"))
    files = plan.files()
    assert sorted(files) == ["meta-data", "network-config", "user-data", "vendor-data"]
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": UUID, "local-hostname": "web",
                    "public-keys": [keys["ed25519"][0]]}
    assert files["user-data"] == b"#cloud-config\nruncmd: [[touch, /ran]]\n"
    vendor = files["vendor-data"].decode()
    assert vendor.startswith("#cloud-config\n")
    assert yaml.safe_load(vendor)["password"] == plan.password_hash
    assert yaml.safe_load(files["network-config"]) == {"version": 1, "config": [
        {"type": "physical", "name": "eth0", "mac_address": MAC0,
         "subnets": [{"type": "dhcp"}]}]}


def test_dhcp_on_the_first_nic_static_where_an_address_is_given():
    plan = _plan(nics=(NIC(mac=MAC0), NIC(mac=MAC1, ip="192.0.2.10/24"),
                       NIC(mac="52:54:00:5e:ed:03")),
                 gateway="192.0.2.1", nameservers=("192.0.2.53",))
    config = yaml.safe_load(plan.files()["network-config"])["config"]
    assert [c.get("subnets") for c in config] == [
        [{"type": "dhcp"}],
        [{"type": "static", "address": "192.0.2.10/24", "gateway": "192.0.2.1"}],
        [], None]
    assert config[3] == {"type": "nameserver", "address": ["192.0.2.53"]}
    assert "vendor-data" not in plan.files()


def test_configdrive_files(keys):
    plan = _plan(format="configdrive", nics=(NIC(mac=MAC0, ip="2001:db8::10"),),
                 gateway="2001:db8::1", ssh_keys=(keys["rsa"][0],),
                 user_data="#!/bin/sh\ntrue\n", password_hash=seedinput.hash_password("pw"))
    files = plan.files()
    root = "openstack/latest/"
    assert sorted(files) == [root + n for n in ("meta_data.json", "network_data.json",
                                                "user_data", "vendor_data.json")]
    meta = json.loads(files[root + "meta_data.json"])
    assert (meta["uuid"], meta["hostname"], meta["name"]) == (UUID, "seed-vm", "seed-vm")
    assert meta["public_keys"] == {"key-0": keys["rsa"][0]}
    assert files[root + "user_data"] == b"#!/bin/sh\ntrue\n"
    net = json.loads(files[root + "network_data.json"])
    assert net["links"] == [{"id": "eth0", "type": "phy", "ethernet_mac_address": MAC0}]
    assert net["networks"] == [{
        "id": "network0", "link": "eth0", "type": "ipv6", "ip_address": "2001:db8::10",
        "netmask": "ffff:ffff:ffff:ffff::",
        "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}]}]
    vendor = json.loads(files[root + "vendor_data.json"])["cloud-init"]
    assert yaml.safe_load(vendor)["password"] == plan.password_hash


# -- the volume -----------------------------------------------------------------------

def _read_iso(path):
    """{path: bytes} through Rock Ridge names, and the Joliet names, of a written ISO."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        found = {}
        for root, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=f"{root.rstrip('/')}/{name}")
                found[f"{root.rstrip('/')}/{name}".lstrip("/")] = out.getvalue()
        joliet = sorted(f"{root.rstrip('/')}/{n}".lstrip("/")
                        for root, _d, names in iso.walk(joliet_path="/") for n in names)
        return found, joliet
    finally:
        iso.close()


@pytest.mark.parametrize("fmt, label", [("nocloud", "cidata"), ("configdrive", "config-2")])
def test_the_written_volume_has_the_label_and_files_cloud_init_reads(tmp_path, keys,
                                                                     fmt, label):
    plan = _plan(format=fmt, ssh_keys=(keys["ed25519"][0],), user_data="#cloud-config\n")
    path = seed.write(plan, str(tmp_path))
    assert path == str(tmp_path / "seed.iso")
    blkid = subprocess.run(["blkid", "-o", "export", path], capture_output=True, text=True,
                           check=True).stdout
    assert f"LABEL={label}\n" in blkid and "TYPE=iso9660" in blkid
    found, joliet = _read_iso(path)
    assert found == plan.files()
    assert joliet == sorted(plan.files())
    assert os.stat(path).st_mode & 0o777 == 0o600  # it holds the password hash
    assert [n for n in os.listdir(tmp_path) if n.startswith(".vd-tmp-")] == []


def test_the_record_gives_back_the_same_plan_and_a_tampered_one_is_refused(tmp_path, keys):
    plan = _plan(ssh_keys=(keys["ed25519"][0],), password_hash=seedinput.hash_password("pw"),
                 nics=(NIC(mac=MAC0, ip="10.1.0.7/16"),), gateway="10.1.0.1")
    seed.write(plan, str(tmp_path))
    record = pathlib.Path(InstanceFiles(str(tmp_path)).seed_record)
    assert seed.read_record(str(tmp_path)) == plan
    raw = json.loads(record.read_text())
    raw["ssh_keys"] = ["-----BEGIN OPENSSH PRIVATE KEY-----"]
    record.write_text(json.dumps(raw))
    with pytest.raises(InvalidParameter, match="private key"):
        seed.read_record(str(tmp_path))
    record.write_text("{not json")
    with pytest.raises(InvalidParameter, match="seed record: not a seed.json"):
        seed.read_record(str(tmp_path))
    assert seed.read_record(str(tmp_path / "nowhere")) is None


def test_no_seed_config_means_no_plan():
    assert seed.plan(Instance(name="plain"), [NIC(mac=MAC0)]) is None
