"""virt-driver CLI: exit codes, one-line errors, image commands on a real store."""

import json
import os
import subprocess
import sys

import pytest

from tests.support.cli import run_cli
from tests.support.images import make_qcow2_with_backing
from virt import images
from virt.cli import main, parse_nic
from virt.cli_output import ProgressBar
from virt.objects import NIC


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "virt-driver.conf"
    path.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\nvirt_type = qemu\n")
    return str(path)


def test_image_import_list_delete_round_trip(config, tmp_path):
    src = str(tmp_path / "disk.raw")
    images.create_image("raw", src, "4M")
    code, out, err = run_cli(config, "image", "import", "demo", src, "--format", "raw",
                             "--property", "arch=x86_64")
    assert (code, err) == (0, "")
    assert "imported demo (raw, 4194304 bytes)" in out

    code, out, _ = run_cli(config, "--json", "image", "list")
    listed = json.loads(out)
    assert code == 0 and [(i["name"], i["properties"]) for i in listed] == [
        ("demo", {"arch": "x86_64"})]
    code, out, _ = run_cli(config, "image", "list")
    assert out.splitlines()[0].split() == ["NAME", "FORMAT", "VIRTUAL_SIZE", "ARCH", "SHA256"]
    assert out.splitlines()[1].split()[:4] == ["demo", "raw", "4194304", "x86_64"]

    assert run_cli(config, "image", "delete", "demo")[0] == 0
    assert json.loads(run_cli(config, "--json", "image", "list")[1]) == []


def test_a_hostile_image_is_one_clear_line_and_exit_1(config, tmp_path):
    code, out, err = run_cli(config, "image", "import", "evil", make_qcow2_with_backing(tmp_path),
                             "--format", "qcow2")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("virt-driver: error: image evil.qcow2 refused: it has a backing file")


@pytest.mark.parametrize("args, message", [
    (["image", "import", "x", "/tmp/x"], "--format"),
    (["boot", "vm"], "--image"),
    (["frobnicate"], "invalid choice"),
    (["image", "import", "x", "/tmp/x", "--format", "raw", "--property", "novalue"],
     "--property 'novalue': use KEY=VALUE"),
])
def test_bad_usage_exits_2(config, args, message):
    code, _, err = run_cli(config, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_an_unknown_image_is_an_operation_error(config):
    code, _, err = run_cli(config, "image", "delete", "nothing")
    assert code == 1 and "image 'nothing' is not in the store" in err


def test_a_missing_config_file_is_reported(tmp_path):
    code, _, err = run_cli(str(tmp_path / "missing.conf"), "image", "list")
    assert code == 2 and "missing.conf" in err


def test_main_returns_the_exit_status(config, capsys):
    assert main(["--config-file", config, "--json", "image", "list"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("text, nic", [
    ("bridge=br0,mac=52:54:00:00:00:01,model=e1000",
     NIC("52:54:00:00:00:01", bridge="br0", model="e1000")),
    ("network=default,mac=52:54:00:00:00:02", NIC("52:54:00:00:00:02", network="default")),
    ("user,mac=52:54:00:00:00:03", NIC("52:54:00:00:00:03")),
])
def test_nic_specs(text, nic):
    assert parse_nic(text) == nic


def test_nic_without_mac_gets_a_local_one():
    assert parse_nic("user").mac.startswith("52:54:00:")


@pytest.mark.parametrize("text", ["bridge", "colour=red", "bridge=br0,speed=10"])
def test_bad_nic_specs(text):
    from virt.cli import UsageError
    with pytest.raises(UsageError, match="--nic"):
        parse_nic(text)


class FakeTerminal:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_bar_draws_only_on_a_terminal():
    term, pipe = FakeTerminal(True), FakeTerminal(False)
    for stream in (term, pipe):
        bar = ProgressBar("importing x", stream)
        for fraction in (0.0, 0.5, 0.5, 1.0):
            bar(fraction)
    assert pipe.text == ""
    assert term.text.count("\r") == 3 and term.text.endswith("100%\n")
    assert "[###############...............]  50%" in term.text


def test_image_export_and_import_chain_between_two_hosts(config, tmp_path):
    src = str(tmp_path / "disk.qcow2")
    images.create_image("qcow2", src, "8M")
    assert run_cli(config, "image", "import", "golden", src, "--format", "qcow2")[0] == 0
    tarball = str(tmp_path / "golden.tar.gz")
    code, out, err = run_cli(config, "image", "export", "golden", tarball)
    assert (code, err) == (0, "") and "exported golden (1 file(s))" in out

    other = tmp_path / "other.conf"
    other.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'other'}\n")
    code, out, err = run_cli(str(other), "--json", "image", "import-chain", "copy", tarball)
    assert (code, err) == (0, "")
    leaf = json.loads(out)["root"]["uuid"]
    listed = json.loads(run_cli(str(other), "--json", "image", "list")[1])
    assert [(i["name"], os.path.basename(i["path"])) for i in listed] == [
        ("copy", f"{leaf}.qcow2")]


def test_a_failed_export_leaves_no_partial_file(config, tmp_path):
    code, _, err = run_cli(config, "image", "export", "missing", str(tmp_path / "out.tar.gz"))
    assert code == 1 and "not in the store" in err
    assert not any(name.startswith((".out", "out")) for name in os.listdir(tmp_path))


def test_instance_commands_on_a_missing_instance(config):
    test_driver = ("--backend", "libvirt", "--connection-uri", "test:///default")
    code, out, err = run_cli(config, *test_driver, "destroy", "ghost")
    assert (code, err) == (0, "") and "does not exist: nothing to destroy" in out
    code, out, err = run_cli(config, *test_driver, "show", "ghost")
    assert code == 1 and out == "" and "ghost" in err and "Traceback" not in err


def test_print_config_creates_nothing(config, tmp_path):
    src = str(tmp_path / "disk.raw")
    images.create_image("raw", src, "4M")
    assert run_cli(config, "image", "import", "img", src, "--format", "raw")[0] == 0
    code, out, err = run_cli(config, "--backend", "libvirt", "--connection-uri",
                             "test:///default", "boot", "vm1", "--image", "img",
                             "--nic", "user,mac=52:54:00:00:00:09", "--print-config")
    assert (code, err) == (0, "")
    assert out.startswith("<domain type=\"qemu\">") and "52:54:00:00:00:09" in out
    assert not os.path.exists(tmp_path / "state" / "instances")


@pytest.mark.parametrize("text, message", [
    ("[DEFAULT]\nstate_path =\n", "[DEFAULT] state_path (set in CONF) '': use an absolute path"),
    ("[DEFAULT]\nstate_path = state\n", "[DEFAULT] state_path (set in CONF) 'state'"),
    ("[images]\nallowed_formats = raw,host_device\n",
     "[images] allowed_formats (set in CONF) 'raw,host_device'"),
    ("[libvirt]\nshutdown_timeout = -1\n", "[libvirt] shutdown_timeout (set in CONF) '-1'"),
])
def test_a_bad_configuration_value_is_one_line_and_exit_2(tmp_path, text, message):
    path = tmp_path / "bad.conf"
    path.write_text(text)
    code, out, err = run_cli(str(path), "image", "list")
    assert (code, out) == (2, "")
    assert err.startswith(f"virt-driver: error: configuration {message.replace('CONF', str(path))}")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def xm_host(tmp_path):
    """A config for the xm backend on the toolstack double, and the double."""
    from tests.xm_double import DoubleHost
    double = DoubleHost(str(tmp_path / "double"))
    path = tmp_path / "xm.conf"
    path.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\nbackend = xm\n"
                    f"virt_type = xen\n[xm]\nconfig_dir = {tmp_path / 'etc-xen'}\n"
                    "toolstack = xl\n")
    env = {**os.environ, "PATH": double.bin_dir + os.pathsep + os.environ["PATH"]}
    return str(path), double, env, tmp_path / "state" / "log" / "virt-driver.log"


def test_warnings_go_to_the_log_not_to_stderr(xm_host):
    config, double, env, log = xm_host
    double.fail("list", "xend busy", times=1)    # the toolstack's retry warns, then succeeds
    script = os.path.join(os.path.dirname(sys.executable), "virt-driver")
    proc = subprocess.run([script, "--config-file", config, "list"], capture_output=True,
                          text=True, env=env)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "WARNING backends.xm.toolstack: xl list failed (attempt 1 of 3)" in log.read_text()

    double.fail("list", "xend gone")
    proc = subprocess.run([script, "--config-file", config, "list"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("virt-driver: error: 'xl list' failed")
    assert log.read_text().count("xend gone") >= 2    # the two retries were logged

    os.remove(os.path.join(double.state_dir, "fail", "list"))
    proc = subprocess.run([script, "--config-file", config, "--debug", "host-info"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0    # --debug: the log on stderr too
    assert "INFO backends.xm.driver: xm backend drives guests with xl" in proc.stderr


def test_image_list_names_a_damaged_record_and_lists_the_others(config, tmp_path):
    src = str(tmp_path / "disk.raw")
    images.create_image("raw", src, "1M")
    assert run_cli(config, "image", "import", "good", src, "--format", "raw")[0] == 0
    (tmp_path / "state" / "images" / "bad.json").write_text("[]")
    code, out, err = run_cli(config, "--json", "image", "list")
    assert code == 0 and [i["name"] for i in json.loads(out)] == ["good"]
    assert err.startswith("virt-driver: warning: record ") and err.count("\n") == 1
    assert "of image 'bad' is damaged: it holds a JSON list" in err
    assert run_cli(config, "image", "delete", "bad")[:2] == (0, "deleted image bad\n")
    assert run_cli(config, "image", "list")[2] == ""


def test_cleanup_reports_what_it_freed(config, tmp_path):
    store = tmp_path / "state" / "images"
    store.mkdir(parents=True)
    (store / ".vd-tmp-import-x.dead").mkdir()
    (store / ".vd-tmp-import-x.dead" / "x.img").write_bytes(b"x" * 65536)
    (store / "orphan.img").write_bytes(b"y" * 4096)
    outside = tmp_path / "exports"
    outside.mkdir()
    (outside / ".vd-tmp-out.tar.gz.dead").write_bytes(b"z" * 4096)
    code, out, err = run_cli(config, "--json", "cleanup", "--path", str(outside))
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert sorted((r["path"], r["what"]) for r in report["reclaimed"]) == [
        (str(outside / ".vd-tmp-out.tar.gz.dead"), "temporary"),
        (str(store / ".vd-tmp-import-x.dead"), "staging directory"),
        (str(store / "orphan.img"), "image file no record names")]
    assert report["freed_bytes"] >= 65536 + 2 * 4096
    assert os.listdir(store) == [] and os.listdir(outside) == []
    code, out, _ = run_cli(config, "cleanup")
    assert (code, out) == (0, "freed 0 bytes in 0 leftover(s) of killed operations\n")


def _leaf_parsers(parser):
    """(command words, parser) of every command that runs something."""
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for words, leaf in _leaf_parsers(sub):
                    yield (name, *words), leaf
            return
    yield (), parser


def test_every_command_has_its_handler_registered_beside_its_parser():
    from virt.cli import Commands, build_parser
    leaves = dict(_leaf_parsers(build_parser()))
    assert ("image", "import-chain") in leaves and ("list",) in leaves
    for words, parser in leaves.items():
        handler = parser.get_default("handler")
        assert handler is not None, words
        assert getattr(Commands, handler.__name__) is handler, words


def test_a_bug_in_a_command_shows_as_a_traceback_not_as_an_error_line(config, monkeypatch):
    from virt.cli import Commands

    def buggy(self):
        raise ValueError("a bug")
    monkeypatch.setattr(Commands, "do_image_list", buggy)
    with pytest.raises(ValueError, match="a bug"):
        main(["--config-file", config, "image", "list"])
