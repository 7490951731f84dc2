"""Migration between two real libvirt hosts (tools/two-hosts.sh), driven through the CLI.

Each host's driver runs inside that host's namespaces with its own config, so
what the destination sees is what its own driver sees: a guest it owns, lists
and drives. Guests here are named "mig-*" and "mg-*". A guest booted with
COUNTER prints a counter once a second that only a new boot restarts: a live
migration must carry it on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest
from oslo_concurrency import processutils

from tests.support.guests import PROJECT_DIR, console_lines, read_disk_marker, wait_for_console

TWO_HOSTS = PROJECT_DIR / "tools" / "two-hosts.sh"
ROOT = Path(os.environ.get("VD_TWO_HOSTS_ROOT", "/tmp/virt-driver-two-hosts"))
IMAGE = "mig-demo"
PREFIXES = ("mig-", "mg-")
COUNTER = "demo.counter=on"


def bed(*argv: str) -> str:
    return processutils.execute(str(TWO_HOSTS), *argv)[0].strip()


@pytest.fixture(scope="module")
def hosts(demo_guest):
    """Both hosts up, the demo disk in the shared store; stopped after if we started them."""
    started = subprocess.run([str(TWO_HOSTS), "running"]).returncode != 0
    try:
        bed("start")
    except processutils.ProcessExecutionError as exc:
        pytest.fail(f"two-hosts.sh start failed: {exc.stderr}", pytrace=False)
    if IMAGE not in {i["name"] for i in cli("A", "image", "list")}:
        cli("A", "image", "import", IMAGE, demo_guest.disk, "--format", "raw")
    yield demo_guest
    for host in ("A", "B"):
        for row in cli(host, "list", "--all"):
            if row["name"].startswith(PREFIXES):
                cli(host, "destroy", row["name"])
    if started:
        bed("stop")


def run_cli(host: str, *argv: str, conf: str | None = None) -> subprocess.CompletedProcess:
    """virt-driver on `host` (its namespaces, its config)."""
    conf = conf or bed("conf", host)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    return subprocess.run([str(TWO_HOSTS), "exec", host, sys.executable, "-m", "virt.cli",
                           "--config-file", conf, "--json", *argv],
                          capture_output=True, text=True, env=env)


def cli(host: str, *argv: str, conf: str | None = None):
    done = run_cli(host, *argv, conf=conf)
    if done.returncode != 0:
        pytest.fail(f"virt-driver {' '.join(argv)} on {host} failed: {done.stderr}",
                    pytrace=False)
    return json.loads(done.stdout)


def boot(host: str, name: str, guest, *extra: str) -> Path:
    """Boot the demo guest; its console log as seen from here (the store behind the mount)."""
    out = cli(host, "boot", name, "--image", IMAGE, "--memory", "256", "--kernel", guest.kernel,
              "--initrd", guest.initrd, "--cmdline", f"{guest.cmdline('wait')} {COUNTER}",
              *extra)
    console = ROOT / "store" / "instances" / out["uuid"] / "console.log"
    wait_for_console(console, "ready")
    return console


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory) -> str:
    """A public key file for --ssh-key (a seeded guest)."""
    path = tmp_path_factory.mktemp("mg-key") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return str(path.with_suffix(".pub"))


def ticks(console: Path) -> list[int]:
    """The counter values the guest printed, in order."""
    return [int(line[5:]) for line in console_lines(console) if line.startswith("tick=")]


def wait_for_tick(console: Path, above: int) -> list[int]:
    """Wait until the guest counted past `above`; every value it printed."""
    deadline = time.monotonic() + 60
    while not (seen := ticks(console)) or seen[-1] <= above:
        assert time.monotonic() < deadline, f"no tick above {above} in {console}: {seen}"
        time.sleep(0.2)
    return seen


def counted_on(values: list[int]) -> bool:
    """One count that never restarted: strictly rising (a line lost in the switch-over
    may leave a gap, a reset would go back)."""
    return all(b > a for a, b in zip(values, values[1:], strict=False))


def seed_disk_source(host: str, name: str) -> str:
    """The seed disk's file in the domain as the host's libvirtd has it."""
    conn = libvirt.open(bed("uri", host))
    try:
        xml = conn.lookupByName(name).XMLDesc(0)
    finally:
        conn.close()
    return next(src for src in re.findall(r"<source file='([^']+)'", xml)
                if src.endswith("/seed.iso"))


def names(host: str) -> list[str]:
    return [row["name"] for row in cli(host, "list", "--all")]


def state(host: str, name: str) -> str:
    return cli(host, "show", name)["state"]


def domains_on(host: str) -> list[str]:
    """Every domain name on the host's libvirtd, owned by a driver or not."""
    conn = libvirt.open(bed("uri", host))
    try:
        return [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


def extra_conf(tmp_path: Path, host: str, **libvirt_opts) -> str:
    """The host's shared-storage config with [libvirt] options added."""
    text = Path(bed("conf", host)).read_text()
    lines = "".join(f"{k} = {v}\n" for k, v in libvirt_opts.items())
    path = tmp_path / f"{host}.conf"
    path.write_text(text.replace("[libvirt]\n", "[libvirt]\n" + lines))
    return str(path)


def test_live_migration_moves_the_running_guest_to_the_destinations_driver(hosts, ssh_key):
    console = boot("A", "mig-live", hosts, "--ssh-key", ssh_key)
    seed_iso = console.parent / "seed.iso"
    before = cli("A", "show", "mig-live")["instance"]
    counted = wait_for_tick(console, 1)[-1]
    result = cli("A", "migrate", "mig-live", bed("uri", "B"))

    assert result["downtime_ms"] is not None and result["time_elapsed_ms"] > 0
    assert "mig-live" not in domains_on("A")        # the source keeps nothing
    assert names("B") == ["mig-live"] and state("B", "mig-live") == "running"
    assert cli("B", "show", "mig-live")["instance"] == before  # same metadata, same meaning
    # it kept running: the counter carried on past where it was, and no second boot
    assert counted_on(wait_for_tick(console, counted + 2))
    assert console_lines(console).count("boot") == 1
    # the seed: the destination's domain reads the same volume, its record beside it
    assert seed_disk_source("B", "mig-live") == str(ROOT / "shared" / seed_iso.relative_to(
        ROOT / "store"))
    assert (console.parent / "seed.json").is_file()
    # the destination's driver drives it with the same meaning: reboot, console, destroy;
    # a hard reboot there rebuilds a lost seed from its record
    seed_iso.unlink()
    cli("B", "reboot", "--hard", "mig-live")
    wait_for_console(console, "boot", count=2)
    lines = wait_for_console(console, "ready", count=2)
    assert seed_iso.is_file()
    assert f"disk=vdb bytes={seed_iso.stat().st_size}" in lines[lines.index("boot", 1):]
    shown = run_cli("B", "console", "mig-live")
    assert shown.returncode == 0 and shown.stdout.count("VIRT-DEMO ready") == 2
    cli("B", "destroy", "mig-live")
    assert names("B") == [] and not console.exists()


def test_destination_down_leaves_the_guest_on_the_source(hosts):
    boot("A", "mig-down", hosts)
    bed("daemon-stop", "B")
    try:
        done = run_cli("A", "migrate", "mig-down", bed("uri", "B"))
    finally:
        bed("daemon-start", "B")
    assert done.returncode == 1 and "keeps running here" in done.stderr
    assert state("A", "mig-down") == "running"
    assert "mig-down" not in domains_on("B")
    cli("A", "destroy", "mig-down")


def test_a_name_used_on_the_destination_is_refused(hosts):
    boot("A", "mig-dup", hosts)
    other = boot("B", "mig-dup", hosts)
    done = run_cli("A", "migrate", "mig-dup", bed("uri", "B"))
    assert done.returncode == 1 and "keeps running here" in done.stderr
    assert state("A", "mig-dup") == "running" and state("B", "mig-dup") == "running"
    assert console_lines(other).count("boot") == 1   # theirs untouched
    cli("A", "destroy", "mig-dup")
    cli("B", "destroy", "mig-dup")


def test_the_completion_timeout_aborts_and_the_guest_stays(hosts, tmp_path):
    boot("A", "mig-slow", hosts)
    conf = extra_conf(tmp_path, "A", migration_max_bandwidth=1,
                      migration_completion_timeout=2)
    done = run_cli("A", "migrate", "mig-slow", bed("uri", "B"), conf=conf)
    assert done.returncode == 1 and "completion timeout of 2s" in done.stderr
    assert state("A", "mig-slow") == "running"
    assert "mig-slow" not in domains_on("B")
    cli("A", "destroy", "mig-slow")


def test_an_interrupted_migration_is_aborted_half_way(hosts, tmp_path):
    boot("A", "mig-stop", hosts)
    conf = extra_conf(tmp_path, "A", migration_max_bandwidth=1)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    # exec replaces two-hosts.sh, so the signal reaches the CLI itself
    proc = subprocess.Popen([str(TWO_HOSTS), "exec", "A", sys.executable, "-m", "virt.cli",
                             "--config-file", conf, "migrate", "mig-stop", bed("uri", "B")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while "mig-stop" not in domains_on("B"):   # the incoming guest exists: half way
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "aborted on request" in err
    assert state("A", "mig-stop") == "running"
    assert "mig-stop" not in domains_on("B")
    cli("A", "destroy", "mig-stop")


# -- block migration: each host its own instances path, cache and store -----------

def local(host: str) -> str:
    return bed("conf", host, "local")


def local_dir(host: str) -> Path:
    return ROOT / f"host{host}" / "local" / "instances"


@pytest.fixture
def local_hosts(hosts):
    """Both hosts on local storage; the demo image in A's store, B's as the test wants."""
    for host in ("A", "B"):
        if IMAGE not in {i["name"] for i in cli(host, "image", "list", conf=local(host))}:
            cli(host, "image", "import", IMAGE, hosts.disk, "--format", "raw", conf=local(host))
    yield hosts
    for host in ("A", "B"):
        for row in cli(host, "list", "--all", conf=local(host)):
            if row["name"].startswith(PREFIXES):
                cli(host, "destroy", row["name"], conf=local(host))


def boot_local(name: str, guest, *extra: str) -> dict:
    out = cli("A", "boot", name, "--image", IMAGE, "--memory", "256", "--kernel", guest.kernel,
              "--initrd", guest.initrd, "--cmdline", f"{guest.cmdline('wait')} {COUNTER}",
              *extra, conf=local("A"))
    wait_for_console(local_dir("A") / out["uuid"] / "console.log", "ready")
    return cli("A", "show", name, conf=local("A"))["instance"]


def image_digest(host: str, name: str) -> str:
    return {i["name"]: i["digest"] for i in cli(host, "image", "list", conf=local(host))}[name]


def prepare(instance: dict, *extra: str) -> subprocess.CompletedProcess:
    """migrate-prepare on B, with A's digest of the image unless `extra` says otherwise."""
    if "--chain" not in extra and "--image-digest" not in extra:
        extra += ("--image-digest", image_digest("A", instance["image"]))
    return run_cli("B", "migrate-prepare", instance["name"], "--uuid", instance["uuid"],
                   "--image", instance["image"], "--disk-gb",
                   str(instance["flavor"]["root_gb"]), *extra, conf=local("B"))


def test_block_migration_copies_the_overlay_to_the_destinations_own_storage(local_hosts):
    instance = boot_local("mig-block", local_hosts)
    uuid = instance["uuid"]
    prepared = prepare(instance)
    assert prepared.returncode == 0, prepared.stderr
    dest_path = json.loads(prepared.stdout)["instances_path"]
    assert dest_path == str(local_dir("B"))
    result = cli("A", "migrate", "mig-block", bed("uri", "B"),
                 "--dest-instances-path", dest_path, conf=local("A"))

    assert result["downtime_ms"] is not None
    assert "mig-block" not in domains_on("A")
    assert not (local_dir("A") / uuid).exists()     # the source's overlay went after success
    shown = cli("B", "show", "mig-block", conf=local("B"))
    assert shown["state"] == "running" and shown["instance"] == instance
    console = local_dir("B") / uuid / "console.log"
    assert console_lines(console).count("boot") == 0  # it kept running: no boot there
    cli("B", "reboot", "mig-block", conf=local("B"))
    wait_for_console(console, "ready")
    cli("B", "destroy", "mig-block", "--keep-disks", conf=local("B"))
    # the guest's second boot read the marker its first boot wrote on A
    disk = local_dir("B") / uuid / "disk"
    assert read_disk_marker(disk, "qcow2").startswith("VIRT-DEMO-MARKER boot=2 ")
    shutil.rmtree(local_dir("B") / uuid)


def test_block_migration_needs_the_same_image_at_the_destination(local_hosts, tmp_path):
    instance = boot_local("mig-noimg", local_hosts)
    digest = image_digest("A", IMAGE)
    cli("B", "image", "delete", IMAGE, conf=local("B"))
    prepared = prepare(instance, "--image-digest", digest)
    assert prepared.returncode == 1 and IMAGE in prepared.stderr
    # the same name on other bytes: the source's overlay must not land on that base
    other = tmp_path / "other.raw"
    other.write_bytes(Path(local_hosts.disk).read_bytes()[:-1] + b"!")
    cli("B", "image", "import", IMAGE, str(other), "--format", "raw", conf=local("B"))
    for extra in ((), ("--image-digest", digest)):
        prepared = run_cli("B", "migrate-prepare", instance["name"], "--uuid",
                           instance["uuid"], "--image", IMAGE, *extra, conf=local("B"))
        assert prepared.returncode == 1, prepared.stdout
        assert f"image {IMAGE}" in prepared.stderr and len(prepared.stderr.splitlines()) == 1
    cli("B", "image", "delete", IMAGE, conf=local("B"))
    assert not (local_dir("B") / instance["uuid"]).exists()
    assert cli("A", "show", "mig-noimg", conf=local("A"))["state"] == "running"


def test_a_failed_block_migration_is_undone_on_both_sides(local_hosts, tmp_path):
    instance = boot_local("mig-blkfail", local_hosts)
    dest_path = json.loads(prepare(instance).stdout)["instances_path"]
    conf = Path(local("A")).read_text().replace(
        "[libvirt]\n", "[libvirt]\nmigration_max_bandwidth = 1\n"
                       "migration_completion_timeout = 2\n")
    (tmp_path / "a.conf").write_text(conf)
    done = run_cli("A", "migrate", "mig-blkfail", bed("uri", "B"), "--dest-instances-path",
                   dest_path, conf=str(tmp_path / "a.conf"))
    assert done.returncode == 1 and "completion timeout" in done.stderr
    assert "mig-blkfail" not in domains_on("B")
    cli("B", "migrate-abandon", "mig-blkfail", "--uuid", instance["uuid"], conf=local("B"))
    assert not (local_dir("B") / instance["uuid"]).exists()
    assert cli("A", "show", "mig-blkfail", conf=local("A"))["state"] == "running"
    assert (local_dir("A") / instance["uuid"] / "disk").exists()


def test_the_completion_timeout_can_switch_to_post_copy(hosts, tmp_path):
    console = boot("A", "mig-post", hosts)
    conf = extra_conf(tmp_path, "A", migration_max_bandwidth=1,
                      migration_completion_timeout=2, migration_timeout_action="postcopy")
    result = cli("A", "migrate", "mig-post", bed("uri", "B"), conf=conf)
    assert result["postcopy"] is True and result["downtime_ms"] is not None
    assert "mig-post" not in domains_on("A")
    assert state("B", "mig-post") == "running"
    assert console_lines(console).count("boot") == 1
    cli("B", "destroy", "mig-post")


def test_block_migration_imports_the_sources_chain_and_keeps_the_seed_and_the_count(
        local_hosts, ssh_key, tmp_path):
    instance = boot_local("mg-chain", local_hosts, "--ssh-key", ssh_key)
    uuid = instance["uuid"]
    source_dir, dest_dir = local_dir("A") / uuid, local_dir("B") / uuid
    record = (source_dir / "seed.json").read_text()
    counted = wait_for_tick(source_dir / "console.log", 1)[-1]
    cli("B", "image", "delete", IMAGE, conf=local("B"))    # only A's store has the image
    chain = tmp_path / "chain.tar.gz"
    cli("A", "image", "export", IMAGE, str(chain), conf=local("A"))
    prepared = prepare(instance, "--chain", str(chain), "--seed-record",
                       str(source_dir / "seed.json"))
    assert prepared.returncode == 0, prepared.stderr
    assert IMAGE in {i["name"] for i in cli("B", "image", "list", conf=local("B"))}
    cli("A", "migrate", "mg-chain", bed("uri", "B"), "--dest-instances-path",
        json.loads(prepared.stdout)["instances_path"], conf=local("A"))

    assert "mg-chain" not in domains_on("A") and not source_dir.exists()  # A keeps nothing
    assert cli("B", "show", "mg-chain", conf=local("B"))["state"] == "running"
    # only the overlay came over: on B it sits on the base made from the imported image
    info = json.loads(processutils.execute("qemu-img", "info", "-U", "--output=json",
                                           str(dest_dir / "disk"))[0])
    assert info["format"] == "qcow2"
    assert Path(info["backing-filename"]).parent == \
        ROOT / "hostB" / "local" / "state" / "_base"
    # the count carried on on B (its console log starts empty there): no reset, no boot
    console = dest_dir / "console.log"
    after = wait_for_tick(console, counted + 2)
    assert after[0] > counted and counted_on(after)
    assert console_lines(console).count("boot") == 0
    # the seed: rebuilt on B from A's record, the domain reads it there
    assert (dest_dir / "seed.json").read_text() == record
    assert seed_disk_source("B", "mg-chain") == str(dest_dir / "seed.iso")
    (dest_dir / "seed.iso").unlink()
    cli("B", "reboot", "--hard", "mg-chain", conf=local("B"))
    lines = wait_for_console(console, "ready")
    assert f"disk=vdb bytes={(dest_dir / 'seed.iso').stat().st_size}" in lines
    cli("B", "destroy", "mg-chain", conf=local("B"))
    assert not dest_dir.exists()


def test_a_stopped_guest_migrates_offline_with_its_definition(hosts):
    out = cli("A", "boot", "mg-off", "--image", IMAGE, "--memory", "256", "--kernel",
              hosts.kernel, "--initrd", hosts.initrd, "--cmdline", hosts.cmdline("wait"))
    console = ROOT / "store" / "instances" / out["uuid"] / "console.log"
    cli("A", "stop", "mg-off", "--force")   # wherever its boot got to
    readies = console_lines(console).count("ready")
    refused = run_cli("A", "migrate", "mg-off", bed("uri", "B"), "--dest-instances-path",
                      str(local_dir("B")))
    assert refused.returncode == 1 and "libvirt copies no disk of a stopped guest" in \
        refused.stderr
    before = cli("A", "show", "mg-off")["instance"]
    result = cli("A", "migrate", "mg-off", bed("uri", "B"))

    assert result["downtime_ms"] is None
    assert "mg-off" not in domains_on("A")
    assert [(r["name"], r["state"]) for r in cli("B", "list", "--all")] == [("mg-off", "shutoff")]
    assert cli("B", "show", "mg-off")["instance"] == before
    cli("B", "start", "mg-off")        # the persistent definition and the disk are there
    wait_for_console(console, "ready", count=readies + 1)
    cli("B", "destroy", "mg-off")
    assert names("B") == [] and not console.exists()
