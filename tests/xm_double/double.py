"""A toolstack double: behaves like `xl` or `xm` over a state directory.

Usage (through the wrappers DoubleHost writes): double.py STATE_DIR SPELLING ARGS...
It implements list, info, create, shutdown, destroy, reboot, pause, unpause,
migrate, block-attach, block-detach, network-attach and network-detach (which
print nothing on success, as xl does; their error texts are the double's own),
answers in the real output format, and fails any command on request
(STATE_DIR/fail/COMMAND holds {"message": ..., "times": N or null}).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time

XL_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
XM_HEADER = "Name                                        ID   Mem VCPUs      State   Time(s)"
DOM0_MEM = 1023
TOTAL_MEM = 16378


class Failure(Exception):
    pass


def load(state_dir: str) -> dict:
    path = os.path.join(state_dir, "domains.json")
    if not os.path.exists(path):
        return {"next_id": 1, "domains": {}, "migrated": {}, "behaviour": {}}
    with open(path) as f:
        return json.load(f)


def save(state_dir: str, state: dict) -> None:
    path = os.path.join(state_dir, "domains.json")
    with open(path + ".tmp", "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.rename(path + ".tmp", path)


def injected_failure(state_dir: str, command: str) -> str | None:
    path = os.path.join(state_dir, "fail", command)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        spec = json.load(f)
    times = spec.get("times")
    if times is not None:
        if times <= 1:
            os.unlink(path)
        else:
            spec["times"] = times - 1
            with open(path, "w") as f:
                json.dump(spec, f)
    return spec["message"]


def row(spelling: str, name: str, dom: dict) -> str:
    if spelling == "xl":
        return (f"{name:<40} {dom['id']:5d} {dom['mem']:5d} {dom['vcpus']:5d}     "
                f"{dom['flags']}  {dom['time']:8.1f}")
    return (f"{name:<40} {dom['id']:5d} {dom['mem']:5d} {dom['vcpus']:5d}     "
            f"{dom['flags']} {dom['time']:9.1f}")


def cmd_list(state, spelling, args):
    out = [XL_HEADER if spelling == "xl" else XM_HEADER,
           row(spelling, "Domain-0", {"id": 0, "mem": DOM0_MEM, "vcpus": 1,
                                      "flags": "r-----", "time": 121152.6})]
    for name, dom in sorted(state["domains"].items(), key=lambda kv: kv[1]["id"]):
        if args and name not in args:
            continue
        # Each look costs the guest a little cpu time, as a real one would show.
        dom["time"] = round(dom["time"] + 0.1, 1)
        out.append(row(spelling, name, dom))
    if args and not any(a in state["domains"] for a in args):
        raise Failure(f"{spelling}: domain '{args[0]}' does not exist")
    print("\n".join(out))


def cmd_info(state, spelling, args):
    used = DOM0_MEM + sum(d["mem"] for d in state["domains"].values())
    version = state["behaviour"].get("version", "4.17.4" if spelling == "xl" else "4.0.1")
    major, minor, micro = version.split(".")
    memory_key = "total_memory"
    lines = [("host", "double.example.com"), ("release", "6.1.0-23-amd64"),
             ("machine", "x86_64"), ("nr_cpus", "4"), ("nr_nodes", "1"),
             ("cores_per_socket", "2"), ("threads_per_core", "1"), ("cpu_mhz", "2800"),
             (memory_key, str(TOTAL_MEM)), ("free_memory", str(TOTAL_MEM - used)),
             ("xen_major", major), ("xen_minor", minor), ("xen_extra", f".{micro}"),
             ("xen_caps", "xen-3.0-x86_64 hvm-3.0-x86_64"), ("xen_scheduler", "credit"),
             ("xend_config_format", "4")]
    print("\n".join(f"{k:<23}: {v}" for k, v in lines))


def _config_value(text: str, key: str) -> str | None:
    match = re.search(rf"^{key}\s*=\s*'?([^'\n]*)'?\s*$", text, re.M)
    return match.group(1) if match else None


def cmd_create(state, spelling, args):
    paths = [a for a in args if not a.startswith("-")]
    if len(paths) != 1:
        raise Failure("usage: create CONFIG")
    path = paths[0]
    if not os.path.isabs(path):
        path = os.path.join("/etc/xen", path)
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise Failure(f"Failed to read config file: {path}: {exc.strerror}") from None
    name = _config_value(text, "name")
    if not name:
        raise Failure(f"{path}: no name in config")
    if name in state["domains"]:
        raise Failure(f"Domain {name} already exists with id {state['domains'][name]['id']}")
    disks = re.search(r"^disk\s*=\s*\[(.*)\]\s*$", text, re.M)
    for spec in re.findall(r"'([^']*)'", disks.group(1) if disks else ""):
        target = spec.split(",")[0].rsplit(":", 1)[-1]
        if not os.path.exists(target):
            raise Failure(f"libxl: error: disk {target} does not exist")
    vifs = re.search(r"^vif\s*=\s*\[(.*)\]\s*$", text, re.M)
    state["domains"][name] = {"id": state["next_id"], "mem": int(_config_value(text, "memory")),
                              "vcpus": int(_config_value(text, "vcpus") or 1),
                              "flags": "-b----", "time": 0.0, "config": path,
                              "disks": {_vdev(spec): _disk_target(spec) for spec in
                                        re.findall(r"'([^']*)'", disks.group(1) if disks else "")},
                              "vifs": [_mac(spec) for spec in
                                       re.findall(r"'([^']*)'", vifs.group(1) if vifs else "")]}
    state["next_id"] += 1
    print(f"Parsing config from {path}" if spelling == "xl" else f"Started domain {name}")


def _vdev(spec: str) -> str:
    return spec.split(",")[1].split(":")[0]


def _disk_target(spec: str) -> str:
    return spec.split(",")[0].rsplit(":", 1)[-1]


def _mac(spec: str) -> str:
    fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    return fields.get("mac", "").lower()


def cmd_block_attach(state, spelling, args):
    # xl: NAME 'prefix:path,vdev,mode'; xm: NAME prefix:path vdev mode
    if len(args) not in (2, 4):
        raise Failure(f"usage: {spelling} block-attach DOMAIN DISK-SPEC")
    name = _domain(state, spelling, args[:1])
    spec = args[1] if len(args) == 2 else ",".join(args[1:])
    target, vdev = _disk_target(spec), _vdev(spec)
    if not os.path.exists(target):
        raise Failure(f"libxl: error: disk {target} does not exist")
    disks = state["domains"][name].setdefault("disks", {})
    if vdev in disks:
        raise Failure(f"libxl: error: device {vdev} is already attached")
    disks[vdev] = target


def cmd_block_detach(state, spelling, args):
    name = _domain(state, spelling, args[:1])
    disks = state["domains"][name].setdefault("disks", {})
    if len(args) != 2 or args[1] not in disks:
        raise Failure(f"Error: Device {args[1:]} not connected.")
    if state["behaviour"].get("disk_busy"):
        return "hang"  # the guest never releases it: the backend waits forever
    del disks[args[1]]


def cmd_network_attach(state, spelling, args):
    name = _domain(state, spelling, args[:1])
    mac = _mac(",".join(args[1:]))
    vifs = state["domains"][name].setdefault("vifs", [])
    if mac in vifs:
        raise Failure(f"libxl: error: a vif with mac {mac} exists")
    vifs.append(mac)


def cmd_network_detach(state, spelling, args):
    name = _domain(state, spelling, args[:1])
    vifs = state["domains"][name].setdefault("vifs", [])
    if len(args) != 2 or args[1].lower() not in vifs:
        raise Failure(f"Error: Device {args[1:]} not connected.")
    vifs.remove(args[1].lower())


def _domain(state, spelling, args) -> str:
    names = [a for a in args if not a.startswith("-")]
    if not names:
        raise Failure("missing domain name")
    if names[0] not in state["domains"]:
        raise Failure(f"{spelling}: domain '{names[0]}' does not exist" if spelling == "xl"
                      else f"Error: Domain '{names[0]}' does not exist.")
    return names[0]


def cmd_shutdown(state, spelling, args):
    name = _domain(state, spelling, args)
    if state["behaviour"].get("ignore_shutdown"):
        if "-w" in args:
            return "hang"
        return None
    del state["domains"][name]


def cmd_destroy(state, spelling, args):
    del state["domains"][_domain(state, spelling, args)]


def cmd_reboot(state, spelling, args):
    name = _domain(state, spelling, args)
    if state["behaviour"].get("reboot_noop"):
        return
    dom = state["domains"][name]
    dom["id"], dom["time"], dom["flags"] = state["next_id"], 0.0, "-b----"
    state["next_id"] += 1


def cmd_pause(state, spelling, args):
    state["domains"][_domain(state, spelling, args)]["flags"] = "--p---"


def cmd_unpause(state, spelling, args):
    state["domains"][_domain(state, spelling, args)]["flags"] = "-b----"


def cmd_migrate(state, spelling, args):
    positional = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "-C":
            skip = True
        elif not arg.startswith("-"):
            positional.append(arg)
    if len(positional) != 2:
        raise Failure("usage: migrate [options] DOMAIN HOST")
    name = _domain(state, spelling, positional[:1])
    state["migrated"][name] = {"host": positional[1], "args": args}
    del state["domains"][name]


COMMANDS = {"list": cmd_list, "info": cmd_info, "create": cmd_create, "shutdown": cmd_shutdown,
            "destroy": cmd_destroy, "reboot": cmd_reboot, "pause": cmd_pause,
            "unpause": cmd_unpause, "migrate": cmd_migrate, "block-attach": cmd_block_attach,
            "block-detach": cmd_block_detach, "network-attach": cmd_network_attach,
            "network-detach": cmd_network_detach}


def main(argv: list[str]) -> int:
    state_dir, spelling = argv[1], argv[2]
    command, args = (argv[3] if len(argv) > 3 else ""), argv[4:]
    with open(os.path.join(state_dir, "calls.log"), "a") as log:
        log.write(json.dumps([spelling, command, *args]) + "\n")
    if command not in COMMANDS:
        print(f"{spelling}: unknown command {command!r}", file=sys.stderr)
        return 2
    with open(os.path.join(state_dir, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        message = injected_failure(state_dir, command)
        if message is not None:
            print(message, file=sys.stderr)
            return 1
        state = load(state_dir)
        if spelling == "xm" and state["behaviour"].get("merged_notice"):
            # What `xm ... 2>&1` shows from Xen 4.4 on: the notice before the answer.
            print("WARNING: xend/xm is deprecated.")
        try:
            result = COMMANDS[command](state, spelling, args)
        except Failure as exc:
            print(exc, file=sys.stderr)
            return 1
        save(state_dir, state)
    if result == "hang":
        # A guest that ignores the shutdown request: `shutdown -w` never returns.
        while True:
            time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
