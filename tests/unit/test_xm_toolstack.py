"""Parsers of `list` and `info` on recorded real output, and the retrying runner."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.xm import toolstack
from backends.xm.toolstack import (
    DomainRow,
    Toolstack,
    host_info,
    parse_info,
    parse_list,
    state_from_flags,
    xen_version,
    xm_available,
)
from virt.conf import make_conf
from virt.errors import ToolstackError
from virt.objects import PowerState

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "xm")


def recorded(name: str) -> str:
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def test_xm_list_dom0_only_hides_dom0_unless_asked():
    text = recorded("xm-list-4.0.1-dom0-only.txt")
    assert parse_list(text) == []
    assert parse_list(text, include_dom0=True) == [
        DomainRow("Domain-0", 0, 1023, 1, "r-----", 121152.6)]


def test_xl_list_with_crashed_and_paused_domains():
    rows = parse_list(recorded("xl-list-4.4-crashed.txt"))
    assert [(r.name, r.id, r.memory_mb, r.state) for r in rows] == [
        ("server01.example.com", 1, 1024, PowerState.BLOCKED),
        ("(null)", 28441, 789, PowerState.CRASHED),
        ("alsodying.example.com", 28448, 1024, PowerState.CRASHED),
    ]
    assert rows[1].cpu_time == 1.2


def test_xl_list_clickos_and_xm_list_blog():
    assert parse_list(recorded("xl-list-clickos.txt")) == [
        DomainRow("clickos", 1, 8, 1, "-b----", 0.0)]
    rows = parse_list(recorded("xm-list-2008-blog.txt"), include_dom0=True)
    assert [(r.name, r.vcpus, r.state) for r in rows] == [
        ("48_VM1", 1, PowerState.BLOCKED), ("Domain-0", 2, PowerState.RUNNING)]


@pytest.mark.parametrize("flags, state", [
    ("r-----", PowerState.RUNNING), ("-b----", PowerState.BLOCKED),
    ("--p---", PowerState.PAUSED), ("---s--", PowerState.SHUTDOWN),
    ("----c-", PowerState.CRASHED), ("-----d", PowerState.SHUTDOWN),
    ("------", PowerState.RUNNING), ("--psc-", PowerState.CRASHED),
    ("-bp---", PowerState.PAUSED),
])
def test_state_letters(flags, state):
    assert state_from_flags(flags) is state


@pytest.mark.parametrize("line", [
    "web 1 512 1 -b----",                  # five columns
    "web 1 512 1 -b---- 1.0 extra",        # seven
    "web x 512 1 -b---- 1.0",              # id not a number
    "web 1 -5 1 -b---- 1.0",               # negative memory
    "web 1 512 1 -x---- 1.0",              # unknown flag
    "web 1 512 1 b----- 1.0",              # flag in the wrong place
    "web 1 512 1 -b---- nan",              # time not a number
    "web 1 512 1 -b---- 1e5",
])
def test_malformed_line_raises_quoting_the_line(line):
    with pytest.raises(ToolstackError) as err:
        parse_list("Name ID Mem VCPUs State Time(s)\n" + line + "\n")
    assert repr(line) in str(err.value)


@given(st.text())
def test_any_list_text_parses_or_raises_toolstack_error(text):
    try:
        rows = parse_list(text, include_dom0=True)
    except ToolstackError:
        return
    assert all(isinstance(r, DomainRow) and len(r.flags) == 6 for r in rows)


@given(st.lists(st.lists(st.sampled_from(
    ["web", "Domain-0", "1", "-3", "512", "r-----", "--p---", "1.5", "x", ":", ""]),
    min_size=0, max_size=8).map(" ".join), max_size=6).map("\n".join))
def test_near_miss_list_text_parses_or_raises(text):
    try:
        parse_list("Name ID Mem VCPUs State Time(s)\n" + text)
    except ToolstackError:
        pass


@given(st.text())
def test_any_info_text_parses_or_raises_toolstack_error(text):
    try:
        facts = parse_info(text)
    except ToolstackError:
        return
    assert isinstance(facts["memory_total"], int)


def test_xm_info_4_0_1():
    facts = parse_info(recorded("xm-info-4.0.1.txt"))
    assert xen_version(facts) == 4_000_001
    dom0 = parse_list(recorded("xm-list-4.0.1-dom0-only.txt"), include_dom0=True)[0]
    info = host_info(facts, dom0)
    assert (info.memory_total, info.memory_free, info.memory_dom0) == (16378, 8004, 1023)
    assert (info.cpu_total, info.cpu_nodes, info.cpu_sockets) == (4, 1, 2)
    assert (info.hypervisor_type, info.arch, info.backend) == ("xen", "x86_64", "xm")


def test_xl_info_4_17_without_dom0_row():
    facts = parse_info(recorded("xl-info-4.17.txt"))
    assert xen_version(facts) == 4_017_004
    info = host_info(facts, None)
    assert (info.memory_total, info.memory_free, info.memory_dom0) == (4063, 2995, None)
    assert (info.cpu_total, info.cpu_sockets) == (2, 1)


def test_old_memory_key_and_missing_keys():
    facts = parse_info("memory : 2048\nfree_memory : 100\nnr_cpus : 2\n"
                       "xen_major : 3\nxen_minor : 2\nxen_extra : -1\n")
    assert facts["memory_total"] == 2048 and xen_version(facts) == 3_002_000
    with pytest.raises(ToolstackError, match="lacks free_memory"):
        parse_info("total_memory : 1\nnr_cpus : 1\nxen_major : 4\nxen_minor : 1\n")
    with pytest.raises(ToolstackError, match="nr_cpus must be a whole number"):
        parse_info("nr_cpus : many\n")


class Recorded:
    """A runner answering from a script of results; records every argv."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_list_is_retried_then_succeeds():
    runner = Recorded(ToolstackError("xend busy"), recorded("xl-list-clickos.txt"))
    sleeps = []
    ts = Toolstack("xl", runner, retries=3, sleep=sleeps.append)
    assert [r.name for r in ts.list_domains()] == ["clickos"]
    assert runner.calls == [["xl", "list"], ["xl", "list"]]
    assert sleeps == [1.0]


def test_list_retries_are_bounded():
    runner = Recorded(*[ToolstackError("no xend")] * 3)
    ts = Toolstack("xm", runner, retries=3, sleep=lambda s: None)
    with pytest.raises(ToolstackError, match="gave up after 3 attempts"):
        ts.list_domains()
    assert len(runner.calls) == 3


def test_host_info_uses_dom0_row():
    runner = Recorded(recorded("xm-info-4.0.1.txt"), recorded("xm-list-4.0.1-dom0-only.txt"))
    info = Toolstack("xm", runner).host_info()
    assert info.memory_dom0 == 1023
    assert runner.calls == [["xm", "info"], ["xm", "list"]]


def test_unknown_toolstack_refused():
    with pytest.raises(ToolstackError, match="use one of xl, xm"):
        Toolstack("virsh")


def test_run_command_reports_exit_code_and_stderr(tmp_path):
    script = tmp_path / "fails"
    script.write_text("#!/bin/sh\necho 'Domain web does not exist' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(ToolstackError, match="exit code 3: Domain web does not exist"):
        toolstack.run_command([str(script)])
    with pytest.raises(ToolstackError, match="could not run"):
        toolstack.run_command([str(tmp_path / "missing")])


def _fake_bin(directory, name):
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_xm_available_finds_the_binary_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    conf = make_conf()
    assert xm_available(conf) is None
    xm = _fake_bin(tmp_path, "xm")
    assert xm_available(conf) == xm
    xl = _fake_bin(tmp_path, "xl")
    assert xm_available(conf) == xl
    assert xm_available(make_conf(xm__toolstack="xm")) == xm


def test_choose_toolstack(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert toolstack.choose_toolstack("xm") == "xm"
    assert toolstack.choose_toolstack("auto", Recorded("host : h\n")) == "xl"
    _fake_bin(tmp_path, "xm")
    assert toolstack.choose_toolstack("auto", Recorded(ToolstackError("no xl"))) == "xm"


# -- xm's deprecation notices (Xen 4.4 and later) ------------------------------

def _notice_lines() -> list[str]:
    """The short and the long notice, as the first run of xm 4.4 prints them."""
    return recorded("xm-list-4.4-first-run.txt").split("Name ")[0].splitlines()


def test_xm_4_4_list_after_the_short_notice():
    rows = parse_list(recorded("xm-list-4.4-deprecated.txt"), include_dom0=True)
    assert rows == [DomainRow("Domain-0", 0, 1024, 4, "r-----", 11.6)]


def test_xm_4_4_list_after_the_long_notice():
    rows = parse_list(recorded("xm-list-4.4-first-run.txt"))
    assert rows == [DomainRow("web-01", 3, 512, 2, "-b----", 4.2)]


@pytest.mark.parametrize("position", range(4))
def test_notices_anywhere_in_the_table_are_skipped(position):
    table = recorded("xm-list-4.4-first-run.txt").splitlines()[-3:]
    lines = table[:position] + _notice_lines() + table[position:]
    assert [r.name for r in parse_list("\n".join(lines) + "\n")] == ["web-01"]


def test_notices_around_xm_info_are_skipped():
    info = recorded("xm-info-4.0.1.txt").splitlines()
    text = "\n".join(_notice_lines() + info[:5] + _notice_lines() + info[5:] + _notice_lines())
    assert parse_info(text) == parse_info(recorded("xm-info-4.0.1.txt"))


@pytest.mark.parametrize("text", [
    "WARNING: xend/xm is deprecated.\n",                           # a notice, no table
    "WARNING: xend/xm is deprecated.\nDomain-0 0 1024 4 r----- 11.6\n",   # no heading
    "WARNING: something else.\nName ID Mem VCPUs State Time(s)\n",  # an unknown line first
    "Name ID Mem VCPUs State Time(s)\nWARNING: xend/xm is deprecated, soon.\n",
    "Name ID Mem VCPUs State\nDomain-0 0 1024 4 r----- 11.6\n",    # heading lacks a column
])
def test_malformed_tables_are_still_refused(text):
    with pytest.raises(ToolstackError, match="cannot parse list output"):
        parse_list(text)


def test_failure_message_leaves_the_notice_out(tmp_path):
    script = tmp_path / "xm"
    script.write_text("#!/bin/sh\necho 'WARNING: xend/xm is deprecated.' >&2\n"
                      "echo 'Error: Domain web does not exist.' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(ToolstackError) as err:
        toolstack.run_command([str(script), "destroy", "web"])
    assert str(err.value).endswith("exit code 1: Error: Domain web does not exist.")
