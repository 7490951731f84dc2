"""Value objects passed between a compute manager, the driver and backends."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PowerState(enum.Enum):
    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    SUSPENDED = "suspended"


class GuestKind(enum.Enum):
    HVM = "hvm"
    PV = "pv"


@dataclass(frozen=True)
class Flavor:
    memory_mb: int = 512
    vcpus: int = 1
    root_gb: int = 1
    name: str = "custom"


@dataclass(frozen=True)
class NIC:
    """One guest NIC. Without bridge or network: a tap device (`tap`) when given, else
    QEMU user networking. ovs_interface_id: the bridge is an Open vSwitch bridge and
    this is the port's id (Neutron's port uuid). mtu: the host side's MTU."""

    mac: str
    bridge: str | None = None
    network: str | None = None
    model: str | None = None
    ip: str | None = None
    tap: str | None = None
    ovs_interface_id: str | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class BlockDevice:
    """An extra disk: an existing file or block device attached to the guest."""

    path: str
    fmt: str = "raw"
    bus: str | None = None
    readonly: bool = False
    device_type: str = "disk"  # "disk" or "cdrom"


@dataclass(frozen=True)
class SeedConfig:
    """What cloud-init reads at first boot; the driver writes it as a read-only seed disk.

    format: nocloud (label cidata) or configdrive (label config-2). hostname:
    defaults to one made from the instance name. Static addresses come from
    each NIC's ip; the first NIC without one gets DHCP. The password is only
    ever given hashed (virt.seedinput.hash_password).
    """

    format: str = "nocloud"
    hostname: str | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None
    password_hash: str | None = None
    gateway: str | None = None
    nameservers: tuple[str, ...] = ()


@dataclass
class Instance:
    name: str
    flavor: Flavor = field(default_factory=Flavor)
    image: str | None = None
    uuid: str = field(default_factory=lambda: _new_uuid())
    kind: GuestKind = GuestKind.HVM
    # Instance params: kernel_path, boot_order, use_localtime, ... one contract
    # for every backend (virt/params.py).
    params: dict[str, str] = field(default_factory=dict)
    nics: tuple[NIC, ...] = ()
    network_port: int | None = None
    seed: SeedConfig | None = None


@dataclass(frozen=True)
class InstanceInfo:
    state: PowerState
    max_mem_kb: int
    mem_kb: int
    num_cpu: int
    cpu_time_ns: int
    id: int | None = None


@dataclass(frozen=True)
class GuestAddresses:
    """Where a guest can be reached, and whether its guest agent answered.

    source: who told the addresses (agent, lease or arp), None when nobody
    did. addresses: (MAC, ADDRESS/PREFIX) pairs, loopback left out.
    """

    agent_answers: bool
    source: str | None = None
    addresses: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HostInfo:
    """Host facts in the xm-info vocabulary (memory in MiB)."""

    memory_total: int
    memory_free: int
    memory_dom0: int | None
    cpu_total: int
    cpu_nodes: int
    cpu_sockets: int
    hypervisor_type: str
    hypervisor_version: int
    arch: str
    backend: str = ""
    disk_total_gb: float | None = None
    disk_free_gb: float | None = None
    disk_used_gb: float | None = None


@dataclass(frozen=True)
class InstanceSummary:
    """One instance in a listing, read for all instances at once.

    vcpus and memory_mb are the instance's flavor (what it was built with);
    None when the backend cannot tell.
    """

    name: str
    uuid: str
    image: str | None
    state: PowerState
    vcpus: int | None
    memory_mb: int | None


def _new_uuid() -> str:
    import uuid  # here: reading instances back (list, show) never makes one, and uuid is slow
    return str(uuid.uuid4())
