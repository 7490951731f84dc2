"""What a backend supports, as a manager reads it before asking.

Every driver has a `capabilities` (a Capabilities). A feature it lacks is
also a method that raises NotSupported: METHODS ties each boolean to the
methods it stands for, and the contract tests hold every backend to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the params table is not loaded for a read command
    from virt.objects import GuestKind
    from virt.params import Support


@dataclass(frozen=True)
class Capabilities:
    """One backend's features; a False one raises NotSupported from its METHODS."""

    guest_kinds: frozenset[GuestKind] = frozenset()
    # Kinds of snapshot(): "cold" (a stopped guest), "live" (a running one stays up).
    snapshot_kinds: frozenset[str] = frozenset()
    live_migration: bool = False
    cold_migration: bool = False
    volume_attach: bool = False
    resize: bool = False
    nic_attach: bool = False
    seed_formats: frozenset[str] = frozenset()
    pause: bool = False
    suspend: bool = False
    console_output: bool = False
    console_command: bool = False
    guest_addresses: bool = False
    # Events: "hypervisor" (every state change) or "driver" (only those this driver makes).
    events: str = "driver"
    # The params of virt/params.py it honours, and for which guest kinds.
    params: Support = field(default_factory=dict)

    @property
    def snapshot(self) -> bool:
        return bool(self.snapshot_kinds)


# Each boolean capability and the contract methods a backend without it refuses.
METHODS: dict[str, tuple[str, ...]] = {
    "snapshot": ("snapshot",),
    "volume_attach": ("attach_volume", "detach_volume"),
    "nic_attach": ("attach_interface", "detach_interface"),
    "resize": ("resize",),
    "pause": ("pause", "unpause"),
    "suspend": ("suspend", "resume"),
    "console_output": ("get_console_output",),
    "console_command": ("get_console_command",),
}
