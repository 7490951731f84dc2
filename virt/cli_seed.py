"""`virt-driver boot` options of the cloud-init seed, read into a SeedConfig.

Files are read here (keys, user-data, password); their content is checked
by virt.seed when the driver plans the seed, before anything is created.
The password is hashed at once and only the hash goes further.
"""

from __future__ import annotations

import argparse

from virt import seedinput
from virt.errors import InvalidParameter
from virt.objects import SeedConfig

SEED_OPTIONS = ("seed", "hostname", "ssh_key", "user_data", "password_file", "gateway",
                "nameserver")


def add_seed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", choices=seedinput.SEED_FORMATS,
                   help="give the guest a cloud-init seed disk (default nocloud when any "
                   "seed option is given)")
    p.add_argument("--hostname", help="guest host name (default: from the instance name)")
    p.add_argument("--ssh-key", action="append", default=[], metavar="FILE",
                   help="an OpenSSH public key file (.pub) for the default user; repeatable")
    p.add_argument("--user-data", metavar="FILE",
                   help=f"#cloud-config YAML or a script, at most {seedinput.MAX_USER_DATA} "
                   "bytes")
    p.add_argument("--password-file", metavar="FILE",
                   help="file whose first line is the default user's password (stored hashed)")
    p.add_argument("--gateway", help="default gateway, in the network of a --nic ip=ADDR/PREFIX")
    p.add_argument("--nameserver", action="append", default=[], metavar="IP",
                   help="DNS server for the guest; repeatable")


def seed_from_args(a: argparse.Namespace) -> SeedConfig | None:
    """The SeedConfig the options ask for; None when no seed option was given."""
    if not any(getattr(a, name) for name in SEED_OPTIONS):
        return None
    keys: list[str] = []
    for path in a.ssh_key:
        text = _read(path, "--ssh-key", seedinput.MAX_KEY_LENGTH * seedinput.MAX_SSH_KEYS)
        keys.extend(line for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#"))
    user_data = None
    if a.user_data is not None:
        user_data = _read(a.user_data, "--user-data", seedinput.MAX_USER_DATA)
    password_hash = None
    if a.password_file is not None:
        lines = _read(a.password_file, "--password-file", seedinput.MAX_PASSWORD).splitlines()
        password_hash = seedinput.hash_password(lines[0] if lines else "")
    return SeedConfig(format=a.seed or "nocloud", hostname=a.hostname, ssh_keys=tuple(keys),
                      user_data=user_data, password_hash=password_hash, gateway=a.gateway,
                      nameservers=tuple(a.nameserver))


def _read(path: str, option: str, limit: int) -> str:
    """The file's text; a file over `limit` bytes is refused without reading all of it."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InvalidParameter(f"{option} {path}: cannot read it ({exc.strerror}); "
                               "give a readable file") from None
    if len(data) > limit:
        raise InvalidParameter(f"{option} {path}: larger than {limit} bytes; give a "
                               "smaller file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParameter(f"{option} {path}: not UTF-8 text") from None
