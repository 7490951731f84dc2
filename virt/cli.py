"""`virt-driver`: a thin compute manager for people and scripts.

It keeps no database: instances are rebuilt from what the backend keeps
(domain metadata, xm config files). Tables for people, --json for scripts.
Exit status: 0 success, 1 operation error, 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import logging.handlers
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass

from oslo_config import cfg

from virt import forwards, images, seed
from virt.cli_seed import add_seed_arguments, seed_from_args
from virt.conf import make_conf
from virt.driver import ComputeDriver, load_driver
from virt.errors import InstanceNotFound, InvalidConfig, InvalidState, VirtError
from virt.fileutils import atomic_target
from virt.imagecache import ImageCache
from virt.imagestore import LocalImageStore
from virt.objects import NIC, Flavor, GuestKind, Instance, PowerState

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
SYSLOG_SOCKET = "/dev/log"
DEFAULT_SSH_USER = "debian"  # the default user of Debian's cloud images
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class UsageError(Exception):
    """Bad command-line usage found after argparse (exit status 2)."""


# -- output --------------------------------------------------------------------

class ProgressBar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.last = -1

    def __call__(self, fraction: float) -> None:
        percent = int(max(0.0, min(fraction, 1.0)) * 100)
        if not self.enabled or percent == self.last:
            return
        self.last = percent
        filled = percent * 30 // 100
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {percent:3d}%")
        if percent == 100:
            self.stream.write("\n")
        self.stream.flush()


def _plain(value):
    """JSON-ready form of results: dataclasses, enums, lists."""
    if is_dataclass(value):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, PowerState | GuestKind):
        return value.value
    return value


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c.upper())] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def print_fields(data: dict) -> None:
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key.ljust(width)}  {'-' if value is None else value}")


class Output:
    def __init__(self, as_json: bool):
        self.as_json = as_json

    def result(self, data, table: Callable[[], None] | None = None) -> None:
        if self.as_json:
            print(json.dumps(_plain(data), indent=2, sort_keys=True))
        elif table is not None:
            table()

    def done(self, message: str, **data) -> None:
        if self.as_json:
            print(json.dumps({"result": "ok", **_plain(data)}, sort_keys=True))
        else:
            print(message)


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
    # 52:54:00 is the locally administered prefix QEMU and libvirt use.
    return "52:54:00:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


def parse_nic(text: str) -> NIC:
    """--nic bridge=BR[,mac=M][,model=X] | network=NET[,...] | user[,...]."""
    fields = key_values(text.removeprefix("user"), "--nic")
    unknown = set(fields) - {"bridge", "network", "mac", "model", "ip", "forward"}
    if unknown:
        raise UsageError(f"--nic {text!r}: unknown key {sorted(unknown)[0]!r}; "
                         "use bridge, network, mac, model, ip, forward (or 'user')")
    return NIC(mac=fields.get("mac") or random_mac(), bridge=fields.get("bridge"),
               network=fields.get("network"), model=fields.get("model"), ip=fields.get("ip"))


def build_parser() -> argparse.ArgumentParser:
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

    image = sub.add_parser("image", help="manage the local image store")
    isub = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    p = isub.add_parser("import", help="inspect and import an image file")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--format", required=True, dest="fmt",
                   help="the image's format (never guessed): qcow2, raw, vmdk, vpc")
    p.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                   help="recorded with the image, e.g. arch=x86_64")
    isub.add_parser("list", help="list stored images")
    p = isub.add_parser("delete", help="delete a stored image")
    p.add_argument("name")
    p = isub.add_parser("export", help="write an image and its chain as a .tar.gz")
    p.add_argument("name")
    p.add_argument("file")
    p = isub.add_parser("import-chain", help="import an image chain from a .tar.gz")
    p.add_argument("name")
    p.add_argument("file")

    volume = sub.add_parser("volume", help="attach or detach an instance's volumes")
    vsub = volume.add_subparsers(dest="volume_command", required=True, metavar="ACTION")
    p = vsub.add_parser("attach", help="attach a copy of a store image or of a file")
    p.add_argument("name")
    p.add_argument("volume", help="an image in the store, or the absolute path of a file")
    p.add_argument("--device", help="target name, e.g. vdc (default: the next free one)")
    p.add_argument("--format", dest="fmt", choices=["raw", "qcow2"],
                   help="the file's format (never guessed); not for store images")
    p = vsub.add_parser("detach", help="detach a volume; waits for the guest to release it")
    p.add_argument("name")
    p.add_argument("device")
    p.add_argument("--timeout", type=int, default=30,
                   help="seconds the guest may take to release the disk")

    nic = sub.add_parser("nic", help="attach or detach an instance's NICs")
    nsub = nic.add_subparsers(dest="nic_command", required=True, metavar="ACTION")
    p = nsub.add_parser("attach", help="add a NIC, live and persistent")
    p.add_argument("name")
    p.add_argument("nic", help="as boot's --nic: bridge=BR,mac=M | network=NET,... | user,...")
    p = nsub.add_parser("detach", help="remove a NIC; waits for the guest to release it")
    p.add_argument("name")
    p.add_argument("mac")
    p.add_argument("--timeout", type=int, default=30,
                   help="seconds the guest may take to release the NIC")

    p = sub.add_parser("boot", help="create and start an instance")
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
    add_seed_arguments(p)

    p = sub.add_parser("ssh", help="ssh to the guest (forwarded port, else its address)")
    p.add_argument("name")
    p.add_argument("--user", default=DEFAULT_SSH_USER, help="guest user (default: %(default)s)")
    p.add_argument("--print", action="store_true", dest="print_command",
                   help="print the command instead of running it")
    p.add_argument("ssh_args", nargs="*", help="more ssh arguments, after --")

    p = sub.add_parser("list", help="list instances")
    p.add_argument("--all", action="store_true", help="include stopped instances")
    for name, help_ in (("show", "show one instance"), ("start", "start a stopped instance"),
                        ("pause", "pause (freeze) an instance"),
                        ("resume", "resume a paused or suspended instance"),
                        ("suspend", "save an instance's memory to disk and stop it")):
        sub.add_parser(name, help=help_).add_argument("name")
    p = sub.add_parser("console", help="print an instance's console log")
    p.add_argument("name")
    p.add_argument("--follow", action="store_true", help="keep printing until it stops")
    p = sub.add_parser("reboot", help="reboot an instance")
    p.add_argument("name")
    p.add_argument("--hard", action="store_true", help="reset instead of asking the guest")
    p = sub.add_parser("stop", help="shut an instance down")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="power off at once")
    p.add_argument("--timeout", type=int, help="seconds to wait for a clean shutdown")
    p = sub.add_parser("snapshot", help="save an instance's disk as a new image")
    p.add_argument("name")
    p.add_argument("image_name")
    p.add_argument("--format", choices=["qcow2", "raw"], default="qcow2", dest="fmt")
    p.add_argument("--compress", action="store_true")
    p = sub.add_parser("migrate", help="move a running instance to another host")
    p.add_argument("name")
    p.add_argument("dest", help="the destination: a libvirt URI (xm: a host name)")
    p.add_argument("--offline", action="store_true", help="pause the guest while it moves")
    p.add_argument("--dest-instances-path", metavar="DIR",
                   help="block migration (no shared storage): what migrate-prepare printed "
                        "on the destination")
    p = sub.add_parser("migrate-prepare", help="destination side of a block migration: "
                       "base and empty disk for an incoming instance")
    p.add_argument("name")
    p.add_argument("--uuid", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--disk-gb", type=int, default=1)
    p = sub.add_parser("migrate-abandon", help="remove what migrate-prepare made, after a "
                       "failed migration")
    p.add_argument("name")
    p.add_argument("--uuid", required=True)
    p = sub.add_parser("destroy", help="stop an instance and remove it")
    p.add_argument("name")
    p.add_argument("--keep-disks", action="store_true")
    sub.add_parser("host-info", help="what this host offers, and which backend serves")
    p = sub.add_parser("cache-cleanup", help="remove unused cached base images")
    p.add_argument("--min-age", type=int, default=86400, metavar="S")
    p = sub.add_parser("cleanup", help="remove what killed operations left behind")
    p.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="also a directory an export wrote into (its .vd-tmp- files)")
    return parser


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
            self._driver = load_driver(self.conf)
        return self._driver

    def store(self) -> LocalImageStore:
        return LocalImageStore.from_conf(self.conf)

    def run(self) -> None:
        command = self.args.command
        if command == "image":
            command = f"image_{self.args.image_command.replace('-', '_')}"
        if command in ("volume", "nic"):
            command = f"{command}_{getattr(self.args, command + '_command')}"
        getattr(self, "do_" + command.replace("-", "_"))()

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
        self.out.result(found, lambda: print_table(rows, ["name", "format", "virtual_size",
                                                          "arch", "sha256"]))

    def do_image_delete(self) -> None:
        self.store().delete(self.args.name)
        self.out.done(f"deleted image {self.args.name}", name=self.args.name)

    def do_image_export(self) -> None:
        from virt import chain
        name, path = self.args.name, self.args.file
        with atomic_target(path) as tmp, open(tmp, "wb") as f:
            members = chain.export_image(self.store(), name, f,
                                         progress=ProgressBar(f"exporting {name}"))
        self.out.done(f"exported {name} ({len(members)} file(s)) to {path}",
                      file=path, members=members)

    def do_image_import_chain(self) -> None:
        from virt import chain
        with open(self.args.file, "rb") as f:
            result = chain.import_chain(
                f, self.store(), self.args.name,
                progress=ProgressBar(f"importing {self.args.name}"),
                max_size=images.parse_size(self.conf.images.max_chain_import_size))
        self.out.done(f"imported chain {self.args.name} (leaf {result['root']['uuid']})",
                      **result)

    # instances
    def _instance_from_args(self) -> Instance:
        a = self.args
        params = dict(one_key_value(p, "--param") for p in a.param)
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
        instance = self._instance_from_args()
        if self.args.print_config:
            print(self.driver.describe_spawn(instance, instance.image, instance.nics), end="")
            seed_plan = seed.plan(instance, instance.nics)
            for path, content in ({} if seed_plan is None else seed_plan.files()).items():
                text = content.decode()
                print(f"--- seed {seed_plan.label}:{path}\n{text}",
                      end="" if text.endswith("\n") else "\n")
            return
        started = time.monotonic()
        self.driver.spawn(instance, instance.image, instance.nics)
        self.out.done(f"booted {instance.name} ({instance.uuid}) in "
                      f"{time.monotonic() - started:.1f} s",
                      name=instance.name, uuid=instance.uuid)

    def _get(self) -> Instance:
        return self.driver.get_instance(self.args.name)

    def _row(self, name: str) -> dict:
        instance = self.driver.get_instance(name)
        info = self.driver.get_info(instance)
        return {"name": name, "uuid": instance.uuid, "state": info.state.value,
                "vcpus": info.num_cpu, "memory_mb": info.max_mem_kb // 1024,
                "image": instance.image}

    def do_list(self) -> None:
        rows = [self._row(name) for name in sorted(self.driver.list_instances())]
        if not self.args.all:
            rows = [r for r in rows if r["state"] not in ("shutoff", "nostate")]
        self.out.result(rows, lambda: print_table(
            rows, ["name", "state", "vcpus", "memory_mb", "image", "uuid"]))

    def do_show(self) -> None:
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
        consistency = self.store().get(a.image_name).properties.get("consistency")
        note = {"crash": " (crash-consistent: no guest agent froze its file systems)",
                "filesystem": " (file systems frozen by the guest agent)"}.get(consistency, "")
        self.out.done(f"saved {a.name}'s disk as image {a.image_name}{note}",
                      image=a.image_name, consistency=consistency)

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
        a = self.args
        extra = {"dest_instances_path": a.dest_instances_path} if a.dest_instances_path else {}
        result = self.driver.migrate(self._get(), a.dest, live=not a.offline,
                                     progress=ProgressBar(f"migrating {a.name}"), **extra)
        figures = _plain(result) if is_dataclass(result) else {}
        downtime = figures.get("downtime_ms")
        self.out.done(f"migrated {a.name} to {a.dest}"
                      + (f" (downtime {downtime} ms)" if downtime is not None else ""),
                      name=a.name, dest=a.dest, **figures)

    def _incoming(self, method: str):
        if not hasattr(self.driver, method):
            raise UsageError(f"the {self.driver.name} backend has no block migration: "
                             "use shared storage")
        a = self.args
        return getattr(self.driver, method), Instance(
            name=a.name, uuid=a.uuid, image=getattr(a, "image", None),
            flavor=Flavor(root_gb=getattr(a, "disk_gb", 1)))

    def do_migrate_prepare(self) -> None:
        prepare, instance = self._incoming("prepare_incoming")
        path = prepare(instance)
        self.out.done(f"ready for {instance.name}: migrate with --dest-instances-path {path}",
                      name=instance.name, instances_path=path)

    def do_migrate_abandon(self) -> None:
        abandon, instance = self._incoming("abandon_incoming")
        abandon(instance)
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
        data = {**asdict(info), "backend_choice": self.driver.selection_reason}
        self.out.result(data, lambda: print_fields(data))

    def do_cache_cleanup(self) -> None:
        reclaimed = self.driver.reclaim()
        cache = ImageCache.from_conf(self.conf)
        removed = cache.cleanup([self.conf.instances_path], self.args.min_age)
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
    cli_args = [arg for f in args.config_file for arg in ("--config-file", f)]
    overrides = {k: v for k, v in (("backend", args.backend), ("virt_type", args.virt_type),
                                   ("libvirt__connection_uri", args.connection_uri)) if v}
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
        return logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        conf = make_cli_conf(args)
    except InvalidConfig as exc:
        print(f"virt-driver: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with logging_to(conf, args.debug):
        return run(parser, args, conf)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace,
        conf: cfg.ConfigOpts) -> int:
    """Run the command; errors become one line on stderr and an exit status."""
    try:
        Commands(args, conf).run()
    except (UsageError, cfg.Error) as exc:
        parser.print_usage(sys.stderr)
        print(f"virt-driver: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (VirtError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"virt-driver: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("virt-driver: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
