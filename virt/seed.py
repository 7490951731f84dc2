"""cloud-init seeds: the NoCloud and OpenStack ConfigDrive volumes, as ISO9660.

plan() checks every input of an instance's SeedConfig (and its NICs'
addresses) before anything is created and returns a SeedPlan; the plan
knows the files of its format and writes them as an ISO with pycdlib (Rock
Ridge and Joliet names, the label cloud-init looks for). The plan is also
recorded as JSON beside the instance (the password only hashed), so that a
hard reboot rebuilds the same seed without the caller.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from virt import seedinput
from virt.errors import InvalidParameter
from virt.fileutils import atomic_target, atomic_write
from virt.instancefiles import SEED_RECORD_FILE, InstanceFiles
from virt.objects import NIC, Instance, SeedConfig
from virt.validation import check_mac

LABELS = {"nocloud": "cidata", "configdrive": "config-2"}
MAX_NAMESERVERS = 3  # what resolv.conf reads
_OPENSTACK = "openstack/latest"


@dataclass(frozen=True)
class NetworkEntry:
    """One guest NIC: its MAC and a static ADDRESS/PREFIX, "dhcp", or None (left alone)."""

    mac: str
    address: str | None


@dataclass(frozen=True)
class SeedPlan:
    """Every checked input of a seed; files() are what the guest reads."""

    format: str
    instance_id: str
    name: str
    hostname: str
    ssh_keys: tuple[str, ...]
    user_data: str | None
    password_hash: str | None
    gateway: str | None
    nameservers: tuple[str, ...]
    networks: tuple[NetworkEntry, ...]

    @property
    def label(self) -> str:
        return LABELS[self.format]

    def kernel_hint(self) -> str | None:
        """Kernel argument that makes cloud-init look for the seed at once (direct boot)."""
        return "ds=nocloud" if self.format == "nocloud" else None

    def files(self) -> dict[str, bytes]:
        """Path in the volume -> content."""
        if self.format == "nocloud":
            return _nocloud_files(self)
        return _configdrive_files(self)

    def to_record(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_record(cls, text: str) -> SeedPlan:
        """A recorded plan, checked again: the file lies where others may have written."""
        try:
            raw = json.loads(text)
            raw["ssh_keys"] = tuple(raw["ssh_keys"])
            raw["nameservers"] = tuple(raw["nameservers"])
            raw["networks"] = tuple(NetworkEntry(**n) for n in raw["networks"])
            recorded = cls(**raw)
        except (ValueError, TypeError, KeyError):
            raise InvalidParameter(f"seed record: not a {SEED_RECORD_FILE} written by virt-driver; "
                                   "destroy and spawn the instance again") from None
        return _checked(recorded)


def plan(instance: Instance, nics: Sequence[NIC]) -> SeedPlan | None:
    """The checked seed of an instance, or None when it asks for none."""
    config = instance.seed
    if config is None:
        return None
    if not isinstance(config, SeedConfig):
        raise InvalidParameter("instance seed: use a virt.objects.SeedConfig")
    networks = tuple(_network_entry(i, nic) for i, nic in enumerate(nics))
    return _checked(SeedPlan(
        format=config.format, instance_id=instance.uuid, name=instance.name,
        hostname=config.hostname if config.hostname is not None
        else seedinput.hostname_from_name(instance.name),
        ssh_keys=tuple(config.ssh_keys) if isinstance(config.ssh_keys, list)
        else config.ssh_keys,
        user_data=config.user_data, password_hash=config.password_hash,
        gateway=config.gateway, nameservers=tuple(config.nameservers)
        if isinstance(config.nameservers, list) else config.nameservers,
        networks=networks))


def _network_entry(index: int, nic: NIC) -> NetworkEntry:
    mac = check_mac(nic.mac, f"nics[{index}].mac")
    if nic.ip is not None:
        return NetworkEntry(mac, str(seedinput.check_address(nic.ip, f"nics[{index}].ip")))
    return NetworkEntry(mac, "dhcp" if index == 0 else None)


def _checked(p: SeedPlan) -> SeedPlan:
    """Every field of a plan checked; raises InvalidParameter naming the first bad one."""
    seedinput.check_format(p.format)
    if not isinstance(p.name, str) or not isinstance(p.instance_id, str):
        raise InvalidParameter("seed: the instance needs a name and a uuid")
    hostname = seedinput.check_hostname(p.hostname)
    keys = seedinput.check_ssh_keys(p.ssh_keys)
    user_data = None if p.user_data is None else seedinput.check_user_data(p.user_data)
    password = None if p.password_hash is None \
        else seedinput.check_password_hash(p.password_hash)
    if not isinstance(p.nameservers, tuple) or len(p.nameservers) > MAX_NAMESERVERS:
        raise InvalidParameter(f"seed nameservers: give a list of at most {MAX_NAMESERVERS}")
    nameservers = tuple(str(seedinput.check_ip(ns, f"seed nameservers[{i}]"))
                        for i, ns in enumerate(p.nameservers))
    networks = tuple(_checked_entry(i, n) for i, n in enumerate(p.networks))
    gateway = None
    if p.gateway is not None:
        gateway = str(seedinput.check_ip(p.gateway, "seed gateway"))
        if _gateway_owner(gateway, networks) is None:
            raise InvalidParameter(
                f"seed gateway {gateway}: no NIC has a static address in its network; give "
                "the NIC an ip such as 192.0.2.10/24, or drop the gateway (DHCP gives one)")
    return SeedPlan(format=p.format, instance_id=p.instance_id, name=p.name,
                    hostname=hostname, ssh_keys=keys, user_data=user_data,
                    password_hash=password, gateway=gateway, nameservers=nameservers,
                    networks=networks)


def _checked_entry(index: int, entry: NetworkEntry) -> NetworkEntry:
    mac = check_mac(entry.mac, f"seed networks[{index}].mac")
    if entry.address in (None, "dhcp"):
        return NetworkEntry(mac, entry.address)
    return NetworkEntry(mac, str(seedinput.check_address(entry.address,
                                                          f"seed networks[{index}].address")))


def _gateway_owner(gateway: str, networks: tuple[NetworkEntry, ...]) -> int | None:
    """Index of the first static NIC whose network holds the gateway."""
    ip = seedinput.check_ip(gateway, "seed gateway")
    for index, entry in enumerate(networks):
        if entry.address not in (None, "dhcp") \
                and ip in seedinput.check_address(entry.address, "address").network:
            return index
    return None


# -- the two formats --------------------------------------------------------------

def _vendor_cloud_config(p: SeedPlan) -> str | None:
    """The default user's password as vendor data, so that user-data stays the user's."""
    if p.password_hash is None:
        return None
    return "#cloud-config\n" + _yaml().safe_dump(
        {"password": p.password_hash, "chpasswd": {"expire": False}}, sort_keys=True)


def _netconfig_v1(p: SeedPlan) -> dict[str, Any]:
    """cloud-init network config version 1: one physical entry per NIC, by MAC."""
    gateway_nic = None if p.gateway is None else _gateway_owner(p.gateway, p.networks)
    config: list[dict[str, Any]] = []
    for index, entry in enumerate(p.networks):
        subnets: list[dict[str, Any]] = []
        if entry.address == "dhcp":
            subnets.append({"type": "dhcp"})
        elif entry.address is not None:
            six = ":" in entry.address
            subnet: dict[str, Any] = {"type": "static6" if six else "static",
                                      "address": entry.address}
            if index == gateway_nic:
                subnet["gateway"] = p.gateway
            subnets.append(subnet)
        config.append({"type": "physical", "name": f"eth{index}", "mac_address": entry.mac,
                       "subnets": subnets})
    if p.nameservers:
        config.append({"type": "nameserver", "address": list(p.nameservers)})
    return {"version": 1, "config": config}


def _nocloud_files(p: SeedPlan) -> dict[str, bytes]:
    meta: dict[str, object] = {"instance-id": p.instance_id, "local-hostname": p.hostname}
    if p.ssh_keys:
        meta["public-keys"] = list(p.ssh_keys)
    files = {
        "meta-data": _yaml().safe_dump(meta, sort_keys=True).encode(),
        "user-data": (p.user_data if p.user_data is not None else "#cloud-config\n{}\n").encode(),
    }
    if p.networks:
        files["network-config"] = _yaml().safe_dump(_netconfig_v1(p), sort_keys=False).encode()
    vendor = _vendor_cloud_config(p)
    if vendor is not None:
        files["vendor-data"] = vendor.encode()
    return files


def _network_data(p: SeedPlan) -> dict[str, Any]:
    """OpenStack network_data.json: links by MAC, networks, DNS services."""
    gateway_nic = None if p.gateway is None else _gateway_owner(p.gateway, p.networks)
    links, networks = [], []
    for index, entry in enumerate(p.networks):
        link = f"eth{index}"
        links.append({"id": link, "type": "phy", "ethernet_mac_address": entry.mac})
        if entry.address == "dhcp":
            networks.append({"id": f"network{index}", "link": link, "type": "ipv4_dhcp"})
        elif entry.address is not None:
            iface = seedinput.check_address(entry.address, "address")
            six = iface.version == 6
            network: dict[str, Any] = {
                "id": f"network{index}", "link": link, "type": "ipv6" if six else "ipv4",
                "ip_address": str(iface.ip), "netmask": str(iface.netmask), "routes": []}
            if index == gateway_nic:
                network["routes"].append({"network": "::" if six else "0.0.0.0",
                                          "netmask": "::" if six else "0.0.0.0",
                                          "gateway": p.gateway})
            networks.append(network)
    services = [{"type": "dns", "address": ns} for ns in p.nameservers]
    return {"links": links, "networks": networks, "services": services}


def _configdrive_files(p: SeedPlan) -> dict[str, bytes]:
    meta: dict[str, Any] = {"uuid": p.instance_id, "name": p.name, "hostname": p.hostname,
                            "launch_index": 0, "files": []}
    if p.ssh_keys:
        meta["public_keys"] = {f"key-{i}": key for i, key in enumerate(p.ssh_keys)}
    vendor = _vendor_cloud_config(p)
    files = {
        f"{_OPENSTACK}/meta_data.json": _json(meta),
        f"{_OPENSTACK}/network_data.json": _json(_network_data(p)),
        f"{_OPENSTACK}/vendor_data.json": _json({} if vendor is None
                                                else {"cloud-init": vendor}),
    }
    if p.user_data is not None:
        files[f"{_OPENSTACK}/user_data"] = p.user_data.encode()
    return files


def _yaml():
    """PyYAML, imported when a seed is rendered (a read command never renders one)."""
    import yaml
    return yaml


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode()


# -- the volume -------------------------------------------------------------------

def _iso_name(name: str, directory: bool) -> str:
    """The plain ISO9660 name (level 3) beside the Rock Ridge and Joliet ones."""
    if directory:
        return re.sub(r"[^A-Z0-9_]", "_", name.upper())[:31]
    base, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    clean = re.sub(r"[^A-Z0-9_]", "_", base.upper())
    return f"{clean}.{re.sub(r'[^A-Z0-9_]', '_', ext.upper())};1" if dot else f"{clean}.;1"


def iso_bytes(seed: SeedPlan) -> bytes:
    """The seed volume: ISO9660 labelled for cloud-init, with Rock Ridge and Joliet names."""
    import pycdlib  # only writing a seed needs it
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=seed.label)
    made: set[str] = set()
    for path, content in sorted(seed.files().items()):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                made.add(directory)
                iso.add_directory(
                    "/" + "/".join(_iso_name(d, True) for d in parts[:depth]),
                    rr_name=parts[depth - 1], joliet_path="/" + directory)
        iso_path = "/" + "/".join([*(_iso_name(d, True) for d in parts[:-1]),
                                   _iso_name(parts[-1], False)])
        iso.add_fp(io.BytesIO(content), len(content), iso_path,
                   rr_name=parts[-1], joliet_path="/" + path)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def write(seed: SeedPlan, directory: str) -> str:
    """Write the seed volume and its record into the instance directory; the volume's path.

    Both are private (0600): they hold the password hash. libvirt gives the
    volume to QEMU when it starts the guest.
    """
    files = InstanceFiles(directory)
    atomic_write(files.seed_record, seed.to_record(), mode=0o600)
    path = files.seed
    with atomic_target(path) as tmp:
        os.chmod(tmp, 0o600)
        with open(tmp, "wb") as f:
            f.write(iso_bytes(seed))
    return path


def read_record(directory: str) -> SeedPlan | None:
    """The plan recorded in an instance directory, or None when it has no seed."""
    try:
        with open(InstanceFiles(directory).seed_record, encoding="utf-8") as f:
            return SeedPlan.from_record(f.read())
    except FileNotFoundError:
        return None
