"""Migration between two real libvirt hosts (tools/two-hosts.sh), driven through the CLI.

Each host's driver runs inside that host's namespaces with its own config, so
what the destination sees is what its own driver sees: a guest it owns, lists
and drives. Guests here are named "mig-*".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest
from oslo_concurrency import processutils

from tests.functional.conftest import PROJECT_DIR, console_lines, wait_for_console

TWO_HOSTS = PROJECT_DIR / "tools" / "two-hosts.sh"
ROOT = Path(os.environ.get("VD_TWO_HOSTS_ROOT", "/tmp/virt-driver-two-hosts"))
IMAGE = "mig-demo"


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
            if row["name"].startswith("mig-"):
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


def boot(host: str, name: str, guest) -> Path:
    """Boot the demo guest; its console log as seen from here (the store behind the mount)."""
    out = cli(host, "boot", name, "--image", IMAGE, "--memory", "256", "--kernel", guest.kernel,
              "--initrd", guest.initrd, "--cmdline", guest.cmdline("wait"))
    console = ROOT / "store" / "instances" / out["uuid"] / "console.log"
    wait_for_console(console, "ready")
    return console


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


def test_live_migration_moves_the_running_guest_to_the_destinations_driver(hosts):
    console = boot("A", "mig-live", hosts)
    result = cli("A", "migrate", "mig-live", bed("uri", "B"))

    assert result["downtime_ms"] is not None and result["time_elapsed_ms"] > 0
    assert "mig-live" not in domains_on("A")        # the source keeps nothing
    assert names("B") == ["mig-live"] and state("B", "mig-live") == "running"
    assert console_lines(console).count("boot") == 1  # it kept running: no second boot
    # the destination's driver drives it with the same meaning: reboot, console, destroy
    cli("B", "reboot", "mig-live")
    wait_for_console(console, "boot", count=2)
    wait_for_console(console, "ready", count=2)
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
