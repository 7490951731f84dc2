"""Every oslo.config option of virt-driver, in one place.

`make_conf()` gives a fresh ConfigOpts with all options registered, so tests
and the CLI never share global state, and checks every value at once
(`check_conf`): a bad value is one InvalidConfig naming the option, not a
surprise in the middle of an operation. `list_opts()` feeds
oslo-config-generator, which writes etc/virt-driver/virt-driver.conf.sample.
"""

import os

from oslo_concurrency import opts as concurrency_opts
from oslo_config import cfg, types

from virt.errors import InvalidConfig
from virt.validation import ACCEPTED_IMAGE_FORMATS

DEFAULT_OPTS = [
    cfg.StrOpt("backend", default="auto",
               choices=[("auto", "libvirt, else xm for Xen hosts without libvirt Xen support"),
                        ("libvirt", "libvirt-python against libvirtd"),
                        ("xm", "the Xen xm/xl toolstack and config files")],
               help="Which backend runs guests. 'auto' tries libvirt first and "
                    "falls back to xm when virt_type is xen and libvirt cannot "
                    "serve it."),
    cfg.StrOpt("virt_type", default="kvm",
               choices=[("kvm", "QEMU with KVM acceleration"),
                        ("qemu", "QEMU with software emulation (TCG)"),
                        ("xen", "Xen, through libvirt or the xm backend"),
                        ("lxc", "Linux containers through libvirt")],
               help="Hypervisor type. Use 'qemu' where KVM is unavailable "
                    "(software emulation)."),
    cfg.StrOpt("state_path", default="/var/lib/virt-driver",
               help="Top directory for everything the driver keeps on this host."),
    cfg.StrOpt("instances_path", default="$state_path/instances",
               help="Where instance directories ({instances_path}/{uuid}) live."),
    cfg.StrOpt("lock_path", default="$state_path/locks",
               help="Directory for the external (inter-process) lock files; "
                    "[oslo_concurrency] lock_path takes precedence when set."),
    cfg.ListOpt("boot_file_dirs", default=[],
                help="Directories whose regular files instances may name as kernel, "
                     "initrd or cdrom (params kernel_path, initrd_path, "
                     "cdrom_image_path). Empty: such files come only from the image "
                     "store (params kernel_image, initrd_image, cdrom_image)."),
    cfg.ListOpt("bootloaders", default=["/usr/bin/pygrub", "/usr/lib/xen/bin/pygrub"],
                help="The only programs instances may name as their Xen PV bootloader "
                     "(param bootloader), compared after resolving links; each runs in "
                     "dom0 as root. Empty: no instance may use a bootloader."),
    cfg.ListOpt("volume_block_devices", default=[],
                help="Host block devices (e.g. /dev/loop7, /dev/disk/by-id/...) that "
                     "instances may get as volumes, compared after resolving links; each "
                     "serves one guest at a time. Empty: volumes are files and store "
                     "images only."),
    cfg.StrOpt("log_file", default="$state_path/log/virt-driver.log",
               help="Where the CLI logs warnings (and, with --debug, everything); "
                    "empty logs to syslog. Stderr carries only the one-line error."),
]

LIBVIRT_OPTS = [
    cfg.StrOpt("connection_uri", default="",
               help="libvirt URI; empty picks one from virt_type "
                    "(qemu:///system, xen:///system, lxc:///)."),
    cfg.IntOpt("keepalive_interval", default=5, min=0,
               help="Seconds between keepalive messages; 0 disables keepalive."),
    cfg.IntOpt("keepalive_count", default=5, min=0,
               help="Unanswered keepalives before the connection counts as dead."),
    cfg.IntOpt("reconnect_max_backoff", default=30, min=1,
               help="Upper bound in seconds of the reconnect backoff."),
    cfg.IntOpt("wait_soft_reboot_seconds", default=120, min=1,
               help="How long a soft reboot may take before a hard reboot is used."),
    cfg.IntOpt("shutdown_timeout", default=60, min=0,
               help="How long a graceful (ACPI) shutdown may take before the "
                    "domain is destroyed."),
    cfg.IntOpt("shutdown_retry_interval", default=10, min=1,
               help="Seconds between repeated ACPI shutdown requests."),
    cfg.FloatOpt("event_stop_delay", default=2.0, min=0,
                 help="Seconds a STOPPED lifecycle event is held back, so that a "
                      "reboot (stop, then start) is not reported as a stop."),
    cfg.IntOpt("console_log_max_bytes", default=100 * 1024, min=1024,
               help="Largest tail of the console log returned to a caller."),
    cfg.IntOpt("migration_completion_timeout", default=800, min=0,
               help="Seconds a live migration may run before on-timeout action "
                    "is taken; 0 waits for ever."),
    cfg.StrOpt("migration_timeout_action", default="abort", choices=["abort", "postcopy"],
               help="At the completion timeout: abort (the guest stays on the source) "
                    "or switch to post-copy (the guest runs on the destination at once)."),
    cfg.IntOpt("migration_max_bandwidth", default=0, min=0,
               help="Largest migration bandwidth in MiB/s; 0 leaves it unlimited."),
    cfg.BoolOpt("migration_auto_converge", default=True,
                help="Throttle the guest's vCPUs when memory is dirtied faster than "
                     "it is copied, so that a busy guest's migration converges."),
]

# What virt.images.parse_size reads: bytes, or a number with a binary unit.
SIZE_PATTERN = r"^\d+[KMGTkmgt]?[Bb]?$"

IMAGES_OPTS = [
    cfg.StrOpt("store_path", default="$state_path/images",
               help="Directory of the local image store (imported images)."),
    cfg.StrOpt("cache_path", default="$state_path/_base",
               help="Directory of the per-host base image cache."),
    cfg.ListOpt("allowed_formats", default=["qcow2", "raw", "vmdk", "vpc"],
                item_type=types.String(choices=ACCEPTED_IMAGE_FORMATS),
                help="Image formats accepted on import, among "
                     f"{', '.join(ACCEPTED_IMAGE_FORMATS)}."),
    cfg.StrOpt("max_virtual_size", default="1T", regex=SIZE_PATTERN,
               help="Largest virtual size accepted for an imported image "
                    "(bytes, or a number with K, M, G or T)."),
    cfg.IntOpt("qemu_img_address_space_mb", default=1024, min=64,
               help="Address space limit of qemu-img when it reads an untrusted image."),
    cfg.IntOpt("qemu_img_cpu_seconds", default=30, min=1,
               help="CPU time limit of qemu-img when it reads an untrusted image."),
    cfg.BoolOpt("snapshot_compression", default=False,
                help="Compress qcow2 snapshots by default."),
    cfg.StrOpt("max_chain_import_size", default="64G", regex=SIZE_PATTERN,
               help="Largest total unpacked size of an imported image chain."),
]

XM_OPTS = [
    cfg.StrOpt("toolstack", default="auto",
               choices=[("auto", "xl when 'xl info' answers, else xm"),
                        ("xl", "the libxl toolstack (Xen 4.1 and later)"),
                        ("xm", "the xend toolstack (before Xen 4.5)")],
               help="Xen toolstack command; 'auto' uses xl when 'xl info' "
                    "answers, else xm."),
    cfg.StrOpt("config_dir", default="/etc/xen",
               help="Directory of the xm-format guest config files."),
    cfg.StrOpt("log_dir", default="/var/log/virt-driver/xen",
               help="Where the config of a guest that failed to start is kept."),
    cfg.IntOpt("shutdown_timeout", default=60, min=0,
               help="How long 'shutdown -w' may take before 'destroy'."),
    cfg.IntOpt("reboot_timeout", default=60, min=1,
               help="How long a reboot may take to be verified."),
    cfg.ListOpt("device_models", default=[],
                help="The only device models (qemu-dm) HVM instances may name (param "
                     "device_model). Empty: the toolstack's own device model always."),
    cfg.ListOpt("hvmloaders", default=["/usr/lib/xen/boot/hvmloader"],
                help="The only HVM firmware files instances may name (param "
                     "hvmloader_path); the default firmware is always used when unset."),
    cfg.IntOpt("command_retries", default=3, min=1,
               help="Attempts of read-only toolstack commands (list, info)."),
]

# oslo.concurrency's own options ([oslo_concurrency] lock_path, ...).
CONCURRENCY_GROUP, CONCURRENCY_OPTS = concurrency_opts.list_opts()[0]

GROUPS = [
    (None, DEFAULT_OPTS),
    ("libvirt", LIBVIRT_OPTS),
    ("images", IMAGES_OPTS),
    ("xm", XM_OPTS),
    (CONCURRENCY_GROUP, CONCURRENCY_OPTS),
]

# Paths that must be absolute, as (group, option): a relative or empty one
# would resolve against whatever directory the process runs in, or the root.
ABSOLUTE_PATHS = [
    (None, "state_path"), (None, "instances_path"), (None, "lock_path"),
    ("images", "store_path"), ("images", "cache_path"),
    ("xm", "config_dir"), ("xm", "log_dir"),
]
# Paths that may be empty (unset) but are absolute when set.
OPTIONAL_PATHS = [(None, "log_file"), (CONCURRENCY_GROUP, "lock_path")]
# Lists whose every item is an absolute path.
PATH_LISTS = [(None, "boot_file_dirs"), (None, "bootloaders"),
              ("xm", "device_models"), ("xm", "hvmloaders")]


def list_opts():
    """Entry point for oslo-config-generator."""
    return [("DEFAULT" if group is None else group, opts) for group, opts in GROUPS]


def make_conf(args=(), config_files=None, **overrides) -> cfg.ConfigOpts:
    """A fresh ConfigOpts with every option registered, parsed and checked.

    overrides: "option" or "group__option" -> value, for tests and the CLI.
    Raises InvalidConfig (one line naming the option) for a bad value.
    """
    conf = cfg.ConfigOpts()
    for group, opts in GROUPS:
        conf.register_opts(opts, group=group)
    try:
        conf(list(args), project="virt-driver", default_config_files=config_files or [],
             default_config_dirs=[])
    except cfg.Error as exc:
        raise InvalidConfig(f"configuration: {exc}") from None
    for key, value in overrides.items():
        group, _, name = key.rpartition("__")
        conf.set_override(name, value, group=group or None)
    check_conf(conf)
    return conf


def option_value(conf: cfg.ConfigOpts, group: str | None, name: str):
    """The value of one option; a malformed one raises InvalidConfig naming it."""
    try:
        return (conf[group] if group else conf)[name]
    except (cfg.Error, ValueError) as exc:
        reason = str(exc).rpartition(" is not valid: ")[2] or str(exc)
        raw, source = _raw_value(conf, group, name)
        where = f"configuration [{group or 'DEFAULT'}] {name}"
        if source:
            where += f" (set in {source}) {raw!r}"
        raise InvalidConfig(f"{where}: {reason}") from None


def check_conf(conf: cfg.ConfigOpts) -> None:
    """Every option readable and sane; raises InvalidConfig on the first bad one."""
    for group, opts in GROUPS:
        for opt in opts:
            option_value(conf, group, opt.dest)
    for group, name in ABSOLUTE_PATHS + OPTIONAL_PATHS:
        value = option_value(conf, group, name)
        if (group, name) in OPTIONAL_PATHS and not value:
            continue
        _check_absolute(conf, group, name, value)
    for group, name in PATH_LISTS:
        for path in option_value(conf, group, name):
            _check_absolute(conf, group, name, path)
    if not conf.images.allowed_formats:
        raise InvalidConfig(f"{_where(conf, 'images', 'allowed_formats')} is empty: use one "
                            f"or more of {', '.join(ACCEPTED_IMAGE_FORMATS)}")


def _raw_value(conf, group: str | None, name: str) -> tuple[str | None, str | None]:
    """The text of an option in the last config file that sets it, and that file."""
    found: tuple[str | None, str | None] = (None, None)
    for path in conf.config_file or ():
        sections: dict = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except (OSError, cfg.ParseError):
            continue
        values = sections.get(group or "DEFAULT", {}).get(name)
        if values:
            found = (values[-1], path)
    return found


def _check_absolute(conf, group: str | None, name: str, value: str) -> None:
    if not value or not os.path.isabs(value) or not value.isprintable():
        raise InvalidConfig(f"{_where(conf, group, name)} {value!r}: use an absolute path "
                            "such as /var/lib/virt-driver")


def _where(conf, group: str | None, name: str) -> str:
    """'[group] name (in FILE)': where a person finds the value to fix."""
    where = f"configuration [{group or 'DEFAULT'}] {name}"
    try:
        detail = conf.get_location(name, group).detail
    except (cfg.Error, ValueError):
        detail = None
    return f"{where} (set in {detail})" if detail and os.path.isabs(detail) else where
