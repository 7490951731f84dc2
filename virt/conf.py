"""Every oslo.config option of virt-driver, in one place.

`make_conf()` gives a fresh ConfigOpts with all options registered, so tests
and the CLI never share global state. `list_opts()` feeds
oslo-config-generator, which writes etc/virt-driver/virt-driver.conf.sample.
"""

from oslo_config import cfg

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
               help="Directory for the external (inter-process) lock files."),
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
]

IMAGES_OPTS = [
    cfg.StrOpt("store_path", default="$state_path/images",
               help="Directory of the local image store (imported images)."),
    cfg.StrOpt("cache_path", default="$state_path/_base",
               help="Directory of the per-host base image cache."),
    cfg.ListOpt("allowed_formats", default=["qcow2", "raw", "vmdk", "vpc"],
                help="Image formats accepted on import."),
    cfg.StrOpt("max_virtual_size", default="1T",
               help="Largest virtual size accepted for an imported image "
                    "(bytes, or a number with K, M, G or T)."),
    cfg.IntOpt("qemu_img_address_space_mb", default=1024, min=64,
               help="Address space limit of qemu-img when it reads an untrusted image."),
    cfg.IntOpt("qemu_img_cpu_seconds", default=30, min=1,
               help="CPU time limit of qemu-img when it reads an untrusted image."),
    cfg.BoolOpt("snapshot_compression", default=False,
                help="Compress qcow2 snapshots by default."),
    cfg.StrOpt("max_chain_import_size", default="64G",
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
    cfg.IntOpt("command_retries", default=3, min=1,
               help="Attempts of read-only toolstack commands (list, info)."),
]

GROUPS = [
    (None, DEFAULT_OPTS),
    ("libvirt", LIBVIRT_OPTS),
    ("images", IMAGES_OPTS),
    ("xm", XM_OPTS),
]


def list_opts():
    """Entry point for oslo-config-generator."""
    return [("DEFAULT" if group is None else group, opts) for group, opts in GROUPS]


def make_conf(args=(), config_files=None, **overrides) -> cfg.ConfigOpts:
    """A fresh ConfigOpts with every option registered and parsed.

    overrides: "option" or "group__option" -> value, for tests and the CLI.
    """
    conf = cfg.ConfigOpts()
    for group, opts in GROUPS:
        conf.register_opts(opts, group=group)
    conf(list(args), project="virt-driver", default_config_files=config_files or [],
         default_config_dirs=[])
    for key, value in overrides.items():
        group, _, name = key.rpartition("__")
        conf.set_override(name, value, group=group or None)
    return conf
