"""`virt-driver resize` and the maximums `virt-driver boot` gives a guest for it.

--max-vcpus and --max-memory become the instance params max_vcpus and
max_memory_mb (see virt/guest.py): the most a live resize can reach.
"""

from __future__ import annotations

import argparse

from virt.errors import InvalidParameter


def add_max_arguments(p: argparse.ArgumentParser) -> None:
    """The boot options that set how far a running guest can be resized."""
    p.add_argument("--max-vcpus", type=int, metavar="N",
                   help="vCPUs a live resize may reach (default: --vcpus)")
    p.add_argument("--max-memory", type=int, metavar="MiB",
                   help="memory a live resize may reach, through the balloon "
                   "(default: --memory)")


def max_params(a: argparse.Namespace) -> dict[str, str]:
    """The instance params of --max-vcpus and --max-memory, those given."""
    return {key: str(value) for key, value in (("max_vcpus", a.max_vcpus),
                                               ("max_memory_mb", a.max_memory))
            if value is not None}


def add_resize_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `virt-driver resize` (its parser and handler: virt/cli.py)."""
    p.add_argument("name")
    p.add_argument("--root-gb", type=int, metavar="GiB", help="new root disk size (only grows)")
    p.add_argument("--vcpus", type=int, metavar="N")
    p.add_argument("--memory", type=int, metavar="MiB")


def do_resize(commands) -> None:
    """Run `virt-driver resize` with the Commands of virt/cli.py."""
    a = commands.args
    sizes = {"root_gb": a.root_gb, "vcpus": a.vcpus, "memory_mb": a.memory}
    asked = {key: value for key, value in sizes.items() if value is not None}
    if not asked:
        raise InvalidParameter("resize: give at least one of --root-gb, --vcpus, --memory")
    commands.driver.resize(commands._get(), **asked)
    flavor = commands.driver.get_instance(a.name).flavor
    commands.out.done(f"resized {a.name}: {flavor.vcpus} vCPUs, {flavor.memory_mb} MiB, "
                      f"{flavor.root_gb} GiB root disk", name=a.name, vcpus=flavor.vcpus,
                      memory_mb=flavor.memory_mb, root_gb=flavor.root_gb)
