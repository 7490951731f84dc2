"""`virt-driver`: a thin compute manager for people and scripts.

It keeps no database: instances are rebuilt from what the backend keeps
(domain metadata, xm config files). Tables for people, --json for scripts.
Exit status: 0 success, 1 operation error, 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from virt.cli_output import Output, ProgressBar, plain, print_fields, print_table
from virt.errors import InstanceNotFound, InvalidConfig, InvalidState, VirtError

if TYPE_CHECKING:  # imported when a command needs them: a read command's start stays short
    from oslo_config import cfg

    from virt.driver import ComputeDriver
    from virt.imagestore import LocalImageStore
    from virt.objects import NIC, Instance

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_READER_GONE = 128 + 13  # as a program SIGPIPE ended: `virt-driver list | head -1`
SYSLOG_SOCKET = "/dev/log"
DEFAULT_SSH_USER = "debian"  # the default user of Debian's cloud images
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class UsageError(Exception):
    """Bad command-line usage found after argparse (exit status 2)."""


# -- parsing helpers -------------------------------------------------------------

def key_values(text: str, what: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {text!r}: use KEY=VALUE[,KEY=VALUE...]")
        pairs[key] = value
    return pairs


def one_key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"{what} {text!r}: use KEY=VALUE")
    return key, value


def random_mac() -> str:
    import random
    # 52:54:00 is the locally administered prefix QEMU and libvirt use.
    return "52:54:00:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


def parse_nic(text: str) -> NIC:
    """--nic bridge=BR[,mac=M][,model=X] | network=NET[,...] | user[,...]."""
    from virt.objects import NIC
    fields = key_values(text.removeprefix("user"), "--nic")
    unknown = set(fields) - {"bridge", "network", "mac", "model", "ip", "forward"}
    if unknown:
        raise UsageError(f"--nic {text!r}: unknown key {sorted(unknown)[0]!r}; "
                         "use bridge, network, mac, model, ip, forward (or 'user')")
    return NIC(mac=fields.get("mac") or random_mac(), bridge=fields.get("bridge"),
               network=fields.get("network"), model=fields.get("model"), ip=fields.get("ip"))


def command(sub, name: str, handler: Callable[[Commands], None], *,
            reads_only: bool = False, done_on_return: bool = False,
            **kwargs) -> argparse.ArgumentParser:
    """The parser of one command, with the handler that runs it registered beside it.

    reads_only: the command changes nothing on the host, so its process may end
    at once after its output (see exit_now). done_on_return: it changes the
    host, but all it wrote is durable and closed, every lock released, when
    its handler returns or raises (boot: spawn's rollback runs before it
    raises), so it may end at once too. Both are the commands whose start
    counts, so both take their configuration from virt.confcache.
    """
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(handler=handler, reads_only=reads_only,
                        exits_at_once=reads_only or done_on_return)
    return parser


# The global options, for named_command(): those that take a value, and flags.
GLOBAL_VALUE_OPTIONS = ("--config-file", "--backend", "--connection-uri", "--virt-type")
GLOBAL_FLAGS = ("--json", "--debug")


def named_command(argv: Sequence[str]) -> str | None:
    """The command argv names, when plain to see: after global options written in full.

    None for anything else (-h, --option=value, an abbreviation argparse would
    accept, an option added since): the full parser decides then.
    """
    args = iter(argv)
    for arg in args:
        if arg in GLOBAL_VALUE_OPTIONS:
            next(args, None)
        elif arg not in GLOBAL_FLAGS:
            return None if arg.startswith("-") else arg
    return None


class _OnlyCommand:
    """The subparsers action's add_parser, building the parser of one command only."""

    def __init__(self, sub, name: str):
        self._sub = sub
        self._name = name
        self.built = False

    def add_parser(self, name: str, **kwargs):
        if name != self._name:
            return _UNBUILT
        self.built = True
        return self._sub.add_parser(name, **kwargs)


class _Unbuilt:
    """Stands for the parser of a command not built: every call is taken and ignored."""

    def __getattr__(self, name: str):
        return self._ignore

    def _ignore(self, *args, **kwargs):
        return self


_UNBUILT = _Unbuilt()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given argv, of the command it names only.

    Building some forty parsers costs a read command a tenth of its
    instructions; one is enough to parse a command line that names its
    command plainly (named_command). An unknown command gets the full parser,
    whose error lists the commands.
    """
    wanted = named_command(argv) if argv is not None else None
    parser = argparse.ArgumentParser(prog="virt-driver",
                                     description="Run guests on this host through virt-driver.")
    parser.add_argument("--config-file", action="append", default=[],
                        help="oslo.config file (see etc/virt-driver/virt-driver.conf.sample)")
    parser.add_argument("--backend", choices=["auto", "libvirt", "xm"])
    parser.add_argument("--connection-uri", help="libvirt URI, e.g. qemu:///system")
    parser.add_argument("--virt-type", choices=["kvm", "qemu", "xen", "lxc"])
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--debug", action="store_true", help="log what the driver does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if wanted is not None:
        only = _OnlyCommand(sub, wanted)
        _add_commands(only)
        return parser if only.built else build_parser()
    _add_commands(sub)
    return parser


def _add_commands(sub) -> None:

    image = sub.add_parser("image", help="manage the local image store")
    isub = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    p = command(isub, "import", Commands.do_image_import, help="inspect and import an image file")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--format", required=True, dest="fmt",
                   help="the image's format (never guessed): qcow2, raw, vmdk, vpc")
    p.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                   help="recorded with the image, e.g. arch=x86_64")
    command(isub, "list", Commands.do_image_list, reads_only=True, help="list stored images")
    p = command(isub, "delete", Commands.do_image_delete, help="delete a stored image")
    p.add_argument("name")
    p = command(isub, "export", Commands.do_image_export,
                help="write an image and its chain as a .tar.gz")
    p.add_argument("name")
    p.add_argument("file")
    p = command(isub, "import-chain", Commands.do_image_import_chain,
                help="import an image chain from a .tar.gz")
    p.add_argument("name")
    p.add_argument("file")

    volume = sub.add_parser("volume", help="attach or detach an instance's volumes")
    vsub = volume.add_subparsers(dest="volume_command", required=True, metavar="ACTION")
    p = command(vsub, "attach", Commands.do_volume_attach,
                help="attach a copy of a store image or of a file")
    p.add_argument("name")
    p.add_argument("volume", help="an image in the store, or the absolute path of a file")
    p.add_argument("--device", help="target name, e.g. vdc (default: the next free one)")
    p.add_argument("--format", dest="fmt", choices=["raw", "qcow2"],
                   help="the file's format (never guessed); not for store images")
    p = command(vsub, "detach", Commands.do_volume_detach,
                help="detach a volume; waits for the guest to release it")
    p.add_argument("name")
    p.add_argument("device")
    p.add_argument("--timeout", type=int, default=30,
                   help="seconds the guest may take to release the disk")

    nic = sub.add_parser("nic", help="attach or detach an instance's NICs")
    nsub = nic.add_subparsers(dest="nic_command", required=True, metavar="ACTION")
    p = command(nsub, "attach", Commands.do_nic_attach, help="add a NIC, live and persistent")
    p.add_argument("name")
    p.add_argument("nic", help="as boot's --nic: bridge=BR,mac=M | network=NET,... | user,...")
    p = command(nsub, "detach", Commands.do_nic_detach,
                help="remove a NIC; waits for the guest to release it")
    p.add_argument("name")
    p.add_argument("mac")
    p.add_argument("--timeout", type=int, default=30,
                   help="seconds the guest may take to release the NIC")

    p = command(sub, "boot", Commands.do_boot, done_on_return=True,
                help="create and start an instance")
    p.add_argument("name")
    p.add_argument("--image", required=True)
    p.add_argument("--memory", type=int, default=512, metavar="MiB")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--disk-gb", type=int, default=1)
    p.add_argument("--kernel", help="kernel for direct boot: a file in a directory of "
                   "[DEFAULT] boot_file_dirs (or --param kernel_image=IMAGE from the store)")
    p.add_argument("--initrd", help="initrd, like --kernel (or --param initrd_image=IMAGE)")
    p.add_argument("--cdrom", help="ISO attached as a cdrom, like --kernel "
                   "(or --param cdrom_image=IMAGE)")
    p.add_argument("--cmdline", help="kernel command line")
    p.add_argument("--nic", action="append", default=[],
                   metavar="bridge=BR[,mac=M][,model=X]",
                   help="a NIC: bridge=BR, network=NET or user, with mac= and model=; "
                   "user,forward=2222:22[+HOST:GUEST...] forwards ports of 127.0.0.1")
    p.add_argument("--guest", choices=["hvm", "pv"], default="hvm")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="hypervisor parameter, e.g. boot_order=cd")
    p.add_argument("--print-config", action="store_true",
                   help="print the document the backend would use and create nothing")
    if p is not _UNBUILT:  # the seed's checks (ipaddress, base64) for boot's parser only
        from virt.cli_resize import add_max_arguments
        from virt.cli_seed import add_seed_arguments
        add_seed_arguments(p)
        add_max_arguments(p)
    p = command(sub, "resize", Commands.do_resize, help="grow the root disk, set vCPUs and "
                "memory (live within the maximums given at boot, else power the guest off first)")
    if p is not _UNBUILT:
        from virt.cli_resize import add_resize_arguments
        add_resize_arguments(p)

    p = command(sub, "ssh", Commands.do_ssh,
                help="ssh to the guest (forwarded port, else its address)")
    p.add_argument("name")
    p.add_argument("--user", default=DEFAULT_SSH_USER, help="guest user (default: %(default)s)")
    p.add_argument("--print", action="store_true", dest="print_command",
                   help="print the command instead of running it")
    p.add_argument("ssh_args", nargs="*", help="more ssh arguments, after --")

    p = command(sub, "list", Commands.do_list, reads_only=True, help="list instances")
    p.add_argument("--all", action="store_true", help="include stopped instances")
    for name, handler, reads_only, help_ in (
            ("show", Commands.do_show, True, "show one instance"),
            ("start", Commands.do_start, False, "start a stopped instance"),
            ("pause", Commands.do_pause, False, "pause (freeze) an instance"),
            ("resume", Commands.do_resume, False, "resume a paused or suspended instance"),
            ("suspend", Commands.do_suspend, False,
             "save an instance's memory to disk and stop it")):
        command(sub, name, handler, reads_only=reads_only, help=help_).add_argument("name")
    p = command(sub, "console", Commands.do_console, help="print an instance's console log")
    p.add_argument("name")
    p.add_argument("--follow", action="store_true", help="keep printing until it stops")
    p = command(sub, "reboot", Commands.do_reboot, help="reboot an instance")
    p.add_argument("name")
    p.add_argument("--hard", action="store_true", help="reset instead of asking the guest")
    p = command(sub, "stop", Commands.do_stop, help="shut an instance down")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="power off at once")
    p.add_argument("--timeout", type=int, help="seconds to wait for a clean shutdown")
    p = command(sub, "snapshot", Commands.do_snapshot,
                help="save an instance's disk as a new image")
    p.add_argument("name")
    p.add_argument("image_name")
    p.add_argument("--format", choices=["qcow2", "raw"], default="qcow2", dest="fmt")
    p.add_argument("--compress", action="store_true")
    p = command(sub, "migrate", Commands.do_migrate, help="move a running instance to another host")
    p.add_argument("name")
    p.add_argument("dest", help="the destination: a libvirt URI (xm: a host name)")
    p.add_argument("--offline", action="store_true", help="pause the guest while it moves")
    p.add_argument("--dest-instances-path", metavar="DIR",
                   help="block migration (no shared storage): what migrate-prepare printed "
                        "on the destination")
    p = command(sub, "migrate-prepare", Commands.do_migrate_prepare,
                help="destination side of a block migration: "
                     "base and empty disk for an incoming instance")
    p.add_argument("name")
    p.add_argument("--uuid", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--disk-gb", type=int, default=1)
    p.add_argument("--chain", metavar="FILE", help="the source's 'image export' of the image, "
                   "imported here first when this store lacks the image")
    p.add_argument("--seed-record", metavar="FILE",
                   help="the source's seed.json of a seeded instance: its seed is rebuilt here")
    p.add_argument("--image-digest", metavar="KIND:HEX",
                   help="the image's digest on the source ('image list --json' there): "
                        "needed when this store already has an image of that name")
    p = command(sub, "migrate-abandon", Commands.do_migrate_abandon,
                help="remove what migrate-prepare made, after a failed migration")
    p.add_argument("name")
    p.add_argument("--uuid", required=True)
    p = command(sub, "destroy", Commands.do_destroy, help="stop an instance and remove it")
    p.add_argument("name")
    p.add_argument("--keep-disks", action="store_true")
    command(sub, "host-info", Commands.do_host_info, reads_only=True,
            help="what this host offers, and which backend serves")
    p = command(sub, "cache-cleanup", Commands.do_cache_cleanup,
                help="remove unused cached base images")
    p.add_argument("--min-age", type=int, default=86400, metavar="S")
    p = command(sub, "cleanup", Commands.do_cleanup,
                help="remove what killed operations left behind")
    p.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="also a directory an export wrote into (its .vd-tmp- files)")


# -- commands --------------------------------------------------------------------

class Commands:
    def __init__(self, args: argparse.Namespace, conf: cfg.ConfigOpts):
        self.args = args
        self.conf = conf
        self.out = Output(args.json)
        self._driver: ComputeDriver | None = None

    @property
    def driver(self) -> ComputeDriver:
        if self._driver is None:
            from virt.driver import installed_backends, load_driver
            # Read commands and boot keep the backends' entry points for the next
            # (virt/entrypoints.py).
            cache_dir = None
            if self.args.exits_at_once:
                from virt.confcache import default_cache_dir
                cache_dir = default_cache_dir()
            self._driver = load_driver(self.conf, installed_backends(cache_dir))
        return self._driver

    def store(self) -> LocalImageStore:
        from virt.imagestore import LocalImageStore
        return LocalImageStore.from_conf(self.conf)

    def run(self) -> None:
        self.args.handler(self)

    # images
    def do_image_import(self) -> None:
        a = self.args
        props = dict(one_key_value(p, "--property") for p in a.property)
        image = self.store().import_image(a.name, a.path, a.fmt, properties=props,
                                          progress=ProgressBar(f"importing {a.name}"))
        self.out.done(f"imported {image.name} ({image.format}, {image.virtual_size} bytes)",
                      image=image)

    def do_image_list(self) -> None:
        found, damaged = self.store().scan()
        for error in damaged.values():
            print(f"virt-driver: warning: {error}", file=sys.stderr)
        rows = [{"name": i.name, "format": i.format, "virtual_size": i.virtual_size,
                 "arch": i.properties.get("arch"), "sha256": i.sha256[:12]} for i in found]
        records = [{**plain(i), "digest": i.digest} for i in found]
        self.out.result(records, lambda: print_table(rows, ["name", "format", "virtual_size",
                                                          "arch", "sha256"]))

    def do_image_delete(self) -> None:
        self.store().delete(self.args.name)
        self.out.done(f"deleted image {self.args.name}", name=self.args.name)

    def do_image_export(self) -> None:
        from virt import chain
        from virt.fileutils import atomic_target
        name, path = self.args.name, self.args.file
        with atomic_target(path) as tmp, open(tmp, "wb") as f:
            members = chain.export_image(self.store(), name, f,
                                         progress=ProgressBar(f"exporting {name}"))
        self.out.done(f"exported {name} ({len(members)} file(s)) to {path}",
                      file=path, members=members)

    def do_image_import_chain(self) -> None:
        from virt import chain, images
        with open(self.args.file, "rb") as f:
            result = chain.import_chain(
                f, self.store(), self.args.name,
                progress=ProgressBar(f"importing {self.args.name}"),
                max_size=images.parse_size(self.conf.images.max_chain_import_size))
        self.out.done(f"imported chain {self.args.name} (leaf {result['root']['uuid']})",
                      **result)

    # instances
    def _instance_from_args(self) -> Instance:
        from virt import forwards
        from virt.cli_resize import max_params
        from virt.cli_seed import seed_from_args
        from virt.objects import Flavor, GuestKind, Instance
        a = self.args
        params = dict(one_key_value(p, "--param") for p in a.param) | max_params(a)
        # Relative to where the user stands; the driver checks the directory is allowed.
        for key, value in (("kernel_path", a.kernel), ("initrd_path", a.initrd),
                           ("cdrom_image_path", a.cdrom)):
            if value is not None:
                params[key] = os.path.abspath(value)
        if a.cmdline is not None:
            params["kernel_args"] = a.cmdline
        nics = tuple(parse_nic(n) for n in a.nic)
        forwarded = [(nic, key_values(text.removeprefix("user"), "--nic")["forward"])
                     for nic, text in zip(nics, a.nic, strict=True) if "forward=" in text]
        if len(forwarded) > 1:
            raise UsageError("--nic ...,forward=: give forwards on one user NIC only")
        for nic, spec in forwarded:
            params[forwards.PARAM] = f"{nic.mac}={spec}"
        return Instance(name=a.name, image=a.image,
                        flavor=Flavor(memory_mb=a.memory, vcpus=a.vcpus, root_gb=a.disk_gb),
                        kind=GuestKind(a.guest), params=params,
                        nics=nics, seed=seed_from_args(a))

    def do_boot(self) -> None:
        from virt import seed
        instance = self._instance_from_args()
        image = self.args.image
        if self.args.print_config:
            print(self.driver.describe_spawn(instance, image, instance.nics), end="")
            seed_plan = seed.plan(instance, instance.nics)
            if seed_plan is not None:
                for path, content in seed_plan.files().items():
                    text = content.decode()
                    print(f"--- seed {seed_plan.label}:{path}\n{text}",
                          end="" if text.endswith("\n") else "\n")
            return
        started = time.monotonic()
        self.driver.spawn(instance, image, instance.nics)
        self.out.done(f"booted {instance.name} ({instance.uuid}) in "
                      f"{time.monotonic() - started:.1f} s",
                      name=instance.name, uuid=instance.uuid)

    def _get(self) -> Instance:
        return self.driver.get_instance(self.args.name)

    def do_list(self) -> None:
        rows = [{"name": s.name, "uuid": s.uuid, "state": s.state.value, "vcpus": s.vcpus,
                 "memory_mb": s.memory_mb, "image": s.image}
                for s in self.driver.list_summaries()]
        if not self.args.all:
            rows = [r for r in rows if r["state"] not in ("shutoff", "nostate")]
        self.out.result(rows, lambda: print_table(
            rows, ["name", "state", "vcpus", "memory_mb", "image", "uuid"]))

    def do_show(self) -> None:
        from virt import forwards
        instance = self._get()
        info = self.driver.get_info(instance)
        data = {"name": instance.name, "uuid": instance.uuid, "state": info.state.value,
                "image": instance.image, "guest": instance.kind.value,
                "flavor": f"{instance.flavor.memory_mb} MiB, {instance.flavor.vcpus} vcpus, "
                          f"{instance.flavor.root_gb} GB disk",
                "vcpus": info.num_cpu, "memory_mb": info.max_mem_kb // 1024,
                "cpu_time_s": round(info.cpu_time_ns / 1e9, 2), "id": info.id,
                "nics": ", ".join(forwards.describe_nic(n.mac, instance.params)
                                  for n in instance.nics) or None,
                "console": " ".join(self.driver.get_console_command(instance))}
        reach = self.driver.get_addresses(instance)
        data["agent"] = "answers" if reach.agent_answers else "does not answer"
        data["addresses"] = ", ".join(
            f"{address} ({mac})" for mac, address in reach.addresses) or None
        data["addresses_from"] = reach.source
        ssh = forwards.ssh_command(instance.params, reach.addresses, DEFAULT_SSH_USER)
        data["ssh"] = " ".join(ssh) if ssh else None
        self.out.result({**data, "instance": instance, "info": info},
                        lambda: print_fields(data))

    def do_ssh(self) -> None:
        from virt import forwards
        instance = self._get()
        reach = self.driver.get_addresses(instance)
        command = forwards.ssh_command(instance.params, reach.addresses, self.args.user)
        if command is None:
            raise InvalidState(
                f"instance {instance.name!r}: no port forwarded to 22 and no address known; "
                "boot it with --nic user,forward=2222:22 or run qemu-guest-agent in it")
        if self.args.print_command:
            self.out.result(command, lambda: print(" ".join(command)))
            return
        os.execvp(command[0], [*command, *self.args.ssh_args])

    def do_console(self) -> None:
        from virt.objects import PowerState
        instance = self._get()
        text = self.driver.get_console_output(instance)
        sys.stdout.write(text)
        seen = text
        while self.args.follow and self.driver.get_info(instance).state is not PowerState.SHUTOFF:
            time.sleep(0.5)
            text = self.driver.get_console_output(instance)
            # The log only grows while the instance runs; print what is new.
            sys.stdout.write(text[len(seen):] if text.startswith(seen) else text)
            sys.stdout.flush()
            seen = text

    def do_reboot(self) -> None:
        self.driver.reboot(self._get(), hard=self.args.hard)
        self.out.done(f"rebooted {self.args.name}", name=self.args.name)

    def do_stop(self) -> None:
        timeout = 0 if self.args.force else self.args.timeout
        self.driver.power_off(self._get(), timeout=timeout)
        self.out.done(f"stopped {self.args.name}", name=self.args.name)

    def do_start(self) -> None:
        self.driver.power_on(self._get())
        self.out.done(f"started {self.args.name}", name=self.args.name)

    def do_pause(self) -> None:
        self.driver.pause(self._get())
        self.out.done(f"paused {self.args.name}", name=self.args.name)

    def do_resume(self) -> None:
        from virt.objects import PowerState
        instance = self._get()
        if self.driver.get_info(instance).state is PowerState.PAUSED:
            self.driver.unpause(instance)
        else:
            self.driver.resume(instance)
        self.out.done(f"resumed {self.args.name}", name=self.args.name)

    def do_suspend(self) -> None:
        self.driver.suspend(self._get())
        self.out.done(f"suspended {self.args.name}", name=self.args.name)

    def do_snapshot(self) -> None:
        a = self.args
        compress = a.compress or (a.fmt == "qcow2" and self.conf.images.snapshot_compression)
        self.driver.snapshot(self._get(), a.image_name, fmt=a.fmt, compress=compress,
                             progress=ProgressBar(f"saving {a.image_name}"))
        consistency = self.store().get(a.image_name).properties.get("consistency", "")
        note = {"crash": " (crash-consistent: no guest agent froze its file systems)",
                "filesystem": " (file systems frozen by the guest agent)"}.get(consistency, "")
        self.out.done(f"saved {a.name}'s disk as image {a.image_name}{note}",
                      image=a.image_name, consistency=consistency)

    def do_resize(self) -> None:
        from virt.cli_resize import do_resize  # with its arguments
        do_resize(self)

    def do_volume_attach(self) -> None:
        a = self.args
        target = self.driver.attach_volume(self._get(), a.volume, device=a.device, fmt=a.fmt)
        self.out.done(f"attached {a.volume} to {a.name} as {target}", name=a.name,
                      device=target)

    def do_volume_detach(self) -> None:
        a = self.args
        self.driver.detach_volume(self._get(), a.device, timeout=a.timeout)
        self.out.done(f"detached {a.device} from {a.name}", name=a.name, device=a.device)

    def do_nic_attach(self) -> None:
        nic = parse_nic(self.args.nic)
        self.driver.attach_interface(self._get(), nic)
        self.out.done(f"attached NIC {nic.mac} to {self.args.name}", name=self.args.name,
                      mac=nic.mac)

    def do_nic_detach(self) -> None:
        a = self.args
        self.driver.detach_interface(self._get(), a.mac, timeout=a.timeout)
        self.out.done(f"detached NIC {a.mac} from {a.name}", name=a.name, mac=a.mac)

    def do_migrate(self) -> None:
        from dataclasses import is_dataclass
        a = self.args
        extra = {"dest_instances_path": a.dest_instances_path} if a.dest_instances_path else {}
        result = self.driver.migrate(self._get(), a.dest, live=not a.offline,
                                     progress=ProgressBar(f"migrating {a.name}"), **extra)
        figures = plain(result) if is_dataclass(result) else {}
        downtime = figures.get("downtime_ms")
        self.out.done(f"migrated {a.name} to {a.dest}"
                      + (f" (downtime {downtime} ms)" if downtime is not None else ""),
                      name=a.name, dest=a.dest, **figures)

    def _incoming(self) -> Instance:
        """The incoming instance of migrate-prepare/-abandon."""
        from virt.objects import Flavor, Instance
        a = self.args
        return Instance(name=a.name, uuid=a.uuid, image=getattr(a, "image", None),
                        flavor=Flavor(root_gb=getattr(a, "disk_gb", 1)))

    def do_migrate_prepare(self) -> None:
        instance = self._incoming()
        a = self.args
        seed_record = None
        if a.seed_record:
            with open(a.seed_record, encoding="utf-8") as f:
                seed_record = f.read()
        with contextlib.ExitStack() as stack:
            chain = stack.enter_context(open(a.chain, "rb")) if a.chain else None
            path = self.driver.prepare_incoming(instance, chain=chain, seed_record=seed_record,
                                                image_digest=a.image_digest)
        self.out.done(f"ready for {instance.name}: migrate with --dest-instances-path {path}",
                      name=instance.name, instances_path=path)

    def do_migrate_abandon(self) -> None:
        instance = self._incoming()
        self.driver.abandon_incoming(instance)
        self.out.done(f"removed what was prepared for {instance.name}", name=instance.name)

    def do_destroy(self) -> None:
        try:
            instance = self._get()
        except InstanceNotFound:
            # Destroy is idempotent: what a retry after a half-seen success needs.
            self.out.done(f"instance {self.args.name} does not exist: nothing to destroy",
                          name=self.args.name)
            return
        self.driver.destroy(instance, destroy_disks=not self.args.keep_disks)
        self.out.done(f"destroyed {self.args.name}", name=self.args.name)

    def do_host_info(self) -> None:
        info = self.driver.get_host_info()
        data = {**plain(info), "backend_choice": self.driver.selection_reason}
        self.out.result(data, lambda: print_fields(data))

    def do_cache_cleanup(self) -> None:
        from virt.imagecache import ImageCache
        reclaimed = self.driver.reclaim()
        cache = ImageCache.from_conf(self.conf)
        disks = [files.disk for files in self.driver.all_instance_files()]
        removed = cache.cleanup(disks, self.args.min_age)
        self.out.done(f"removed {len(removed)} unused base image(s) and "
                      f"{len(reclaimed)} leftover(s) of killed operations",
                      removed=removed, reclaimed=reclaimed)

    def do_cleanup(self) -> None:
        reclaimed = self.driver.reclaim(self.args.path)
        freed = sum(r.bytes for r in reclaimed)
        rows = [{"path": r.path, "bytes": r.bytes, "what": r.what} for r in reclaimed]

        def table() -> None:
            if rows:
                print_table(rows, ["path", "bytes", "what"])
            print(f"freed {freed} bytes in {len(rows)} leftover(s) of killed operations")
        self.out.result({"reclaimed": reclaimed, "freed_bytes": freed}, table)


def make_cli_conf(args: argparse.Namespace) -> cfg.ConfigOpts:
    """The configuration; read commands and boot take it from virt.confcache when still true."""
    cli_args = [arg for f in args.config_file for arg in ("--config-file", f)]
    overrides = {k: v for k, v in (("backend", args.backend), ("virt_type", args.virt_type),
                                   ("libvirt__connection_uri", args.connection_uri)) if v}
    if args.exits_at_once:
        from virt.confcache import resolved_conf
        return resolved_conf(cli_args, overrides)
    from virt.conf import make_conf
    return make_conf(cli_args, **overrides)


def log_handler(log_file: str) -> logging.Handler:
    """The log file (its directory made), else syslog, else nowhere: never stderr."""
    if log_file:
        try:
            os.makedirs(os.path.dirname(log_file), exist_ok=True)
            return logging.FileHandler(log_file)
        except OSError:
            pass
    if os.path.exists(SYSLOG_SOCKET):
        from logging.handlers import SysLogHandler
        return SysLogHandler(address=SYSLOG_SOCKET)
    return logging.NullHandler()


@contextlib.contextmanager
def logging_to(conf: cfg.ConfigOpts, debug: bool):
    """Warnings (and with --debug everything) to the log, so stderr keeps one line.

    --debug also copies the log to stderr. Undone on exit: main() may run in a
    process that logs elsewhere (tests, a manager calling it).
    """
    root = logging.getLogger()
    handlers = [log_handler(conf.log_file)]
    if debug:
        handlers.append(logging.StreamHandler(sys.stderr))
    saved_level = root.level
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    logging.captureWarnings(True)  # Python warnings go the same way
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved_level)


def main(argv: Sequence[str] | None = None) -> int:
    """The `virt-driver` process (argv None), or one command in a caller's process."""
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        conf = make_cli_conf(args)
    except InvalidConfig as exc:
        print(f"virt-driver: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with logging_to(conf, args.debug):
        code = run(parser, args, conf)
    if argv is None:
        code = flushed(code)
        if args.exits_at_once:
            exit_now(code)
    return code


def flushed(code: int) -> int:
    """code once stdout is flushed; EXIT_READER_GONE, quietly, if its reader went away."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return reader_gone()
    return code


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe that nobody reads any more."""
    import select
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):  # not a file descriptor (a caller's StringIO)
        return False


def reader_gone() -> int:
    """Stop writing to stdout (the interpreter's last flush would fail again), like `cat`."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_READER_GONE


def exit_now(code: int) -> None:
    """End the process of a read command or a boot without the interpreter's teardown
    (30-40 ms; 6% of a boot's instructions).

    Safe for commands that change nothing, or that finished what they changed
    (see command()): their output is flushed here, the log handlers were
    flushed and closed by logging_to, no file is left open for writing and no
    lock held, and the libvirt connection ends with its socket (libvirtd drops
    the client and its event registrations). Only daemon threads run.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace,
        conf: cfg.ConfigOpts) -> int:
    """Run the command; errors become one line on stderr and an exit status.

    Only errors that describe the operation or its input are caught: a bug
    (a ValueError, a KeyError from the code) shows as a traceback.
    """
    try:
        Commands(args, conf).run()
    except UsageError as exc:
        return usage_error(parser, exc)
    except (VirtError, OSError) as exc:
        if isinstance(exc, BrokenPipeError) and stdout_reader_gone():
            return reader_gone()  # nobody to tell: the reader has all it wanted
        if args.debug:
            raise
        print(f"virt-driver: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("virt-driver: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not is_config_error(exc):
            raise
        return usage_error(parser, exc)
    return EXIT_OK


def usage_error(parser: argparse.ArgumentParser, exc: Exception) -> int:
    parser.print_usage(sys.stderr)
    print(f"virt-driver: error: {exc}", file=sys.stderr)
    return EXIT_USAGE


def is_config_error(exc: Exception) -> bool:
    """An oslo.config error; oslo.config is not imported for it (a read command skips it)."""
    cfg = sys.modules.get("oslo_config.cfg")
    return cfg is not None and isinstance(exc, cfg.Error)


if __name__ == "__main__":
    sys.exit(main())
