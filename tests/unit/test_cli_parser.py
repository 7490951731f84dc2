"""The parser of one command, built when argv names it: the same answers as the full parser."""

from __future__ import annotations

import argparse
import hashlib

import pytest

from virt import contenthash
from virt.cli import build_parser, named_command

COMMAND_LINES = [
    ["list"], ["--config-file", "a.conf", "--json", "list", "--all"],
    ["--virt-type", "qemu", "--backend", "libvirt", "show", "vm1"],
    ["--connection-uri", "test:///default", "--debug", "host-info"],
    ["image", "list"], ["image", "import", "x", "/tmp/x", "--format", "raw"],
    ["boot", "vm", "--image", "base", "--nic", "user,forward=2222:22", "--seed", "nocloud",
     "--max-vcpus", "4"],
    ["resize", "vm", "--vcpus", "2"], ["volume", "attach", "vm", "data"],
    ["nic", "detach", "vm", "52:54:00:00:00:01"], ["stop", "vm", "--force"],
]


def namespace(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    return {k: v for k, v in vars(parser.parse_args(argv)).items()}


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=" ".join)
def test_one_commands_parser_parses_as_the_full_one(argv):
    assert named_command(argv) is not None
    assert namespace(build_parser(argv), argv) == namespace(build_parser(), argv)


def test_only_the_named_command_is_built():
    def commands(parser):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return set(sub.choices)
    assert commands(build_parser(["list", "--all"])) == {"list"}
    assert commands(build_parser(["image", "list"])) == {"image"}
    assert len(commands(build_parser())) > 20


@pytest.mark.parametrize("argv", [
    ["-h"], ["--config=a.conf", "list"], ["--config-file=a.conf", "list"], ["--json"], [],
    ["--new-global-option", "list"],
])
def test_anything_less_plain_names_no_command(argv):
    assert named_command(argv) is None


def test_an_unknown_command_gets_the_full_parsers_error(capsys):
    with pytest.raises(SystemExit):
        build_parser(["lst"]).parse_args(["lst"])
    err = capsys.readouterr().err
    assert "invalid choice: 'lst'" in err and "'host-info'" in err and "'boot'" in err


def test_the_written_out_zero_chunk_digest_is_the_hash_of_a_zero_chunk():
    assert contenthash._ZERO_CHUNK_DIGEST == hashlib.sha256(bytes(contenthash.CHUNK)).digest()
