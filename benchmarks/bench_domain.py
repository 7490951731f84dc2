"""Domain XML cost: the model (virt/domain.py) against bare lxml, same document, same run.

The document is a realistic KVM guest: 2 disks, 1 NIC, serial, console, VNC
with tablet and video, features, clock and the project metadata (about 40
elements). Figures are medians of several rounds, in microseconds per
document built and serialized. build_domain (input checks and policy on top
of the model) is shown too, for information.

The second figure is reading: parse plus serialize every document of the
libvirt corpus (../shared/corpora/libvirt-domains, when present) through
Domain.from_xml(...).to_xml() against bare lxml fromstring + tostring with the
same parser, in documents per second.

Run: .venv/bin/python benchmarks/bench_domain.py [--rounds N] [--number N]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time
import timeit

from lxml import etree

from virt.domain import (
    _PARSER,
    OS,
    Clock,
    Console,
    Disk,
    Domain,
    Features,
    Graphics,
    Input,
    InstanceMetadata,
    Interface,
    Serial,
    Video,
)
from virt.guest import build_domain
from virt.objects import NIC, BlockDevice, Flavor, GuestKind, Instance

UUID = "6f1d1a7e-3b8f-4f57-9f5b-2f0a8c2e6d41"
NS = "http://virt-driver.org/xmlns/instance/1.0"
MD = "{%s}" % NS  # noqa: UP031
FLAVOR = Flavor(memory_mb=512, vcpus=2, root_gb=10, name="m1.small")


def model_document() -> str:
    domain = Domain(
        type="qemu", name="bench-vm", uuid=UUID, memory_kib=524288,
        current_memory_kib=524288, vcpus=2,
        os=OS(type="hvm", arch="x86_64", machine="pc", boot_devices=["hd"]),
        features=Features(acpi=True, apic=True), clock=Clock(offset="utc"),
        on_poweroff="destroy", on_reboot="restart", on_crash="destroy",
        metadata=InstanceMetadata(instance_uuid=UUID, flavor=FLAVOR, image="cirros",
                                  kind=GuestKind.HVM),
        devices=[
            Disk(source="/var/lib/vd/instances/bench/disk", target_dev="vda",
                 target_bus="virtio", driver_name="qemu", driver_type="qcow2"),
            Disk(source="/var/lib/vd/instances/bench/data", target_dev="vdb",
                 target_bus="virtio", driver_name="qemu", driver_type="raw"),
            Interface(type="bridge", mac="52:54:00:12:34:56", source="br0", model="virtio"),
            Serial(type="file", path="/var/lib/vd/instances/bench/console.log", target_port=0),
            Console(type="file", path="/var/lib/vd/instances/bench/console.log",
                    target_type="serial", target_port=0),
            Input(type="tablet", bus="usb"),
            Graphics(listen="127.0.0.1", autoport=True),
            Video(model="cirrus"),
        ])
    return domain.to_xml()


def bare_lxml_document() -> str:
    sub = etree.SubElement
    root = etree.Element("domain", type="qemu")
    sub(root, "name").text = "bench-vm"
    sub(root, "uuid").text = UUID
    inst = sub(sub(root, "metadata"), MD + "instance", nsmap={"vd": NS})
    sub(inst, MD + "uuid").text = UUID
    sub(inst, MD + "flavor", name="m1.small", memory_mb="512", vcpus="2", root_gb="10")
    sub(inst, MD + "image").text = "cirros"
    sub(inst, MD + "kind").text = "hvm"
    sub(root, "memory", unit="KiB").text = "524288"
    sub(root, "currentMemory", unit="KiB").text = "524288"
    sub(root, "vcpu").text = "2"
    os_ = sub(root, "os")
    sub(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    sub(os_, "boot", dev="hd")
    features = sub(root, "features")
    sub(features, "acpi")
    sub(features, "apic")
    sub(root, "clock", offset="utc")
    sub(root, "on_poweroff").text = "destroy"
    sub(root, "on_reboot").text = "restart"
    sub(root, "on_crash").text = "destroy"
    devices = sub(root, "devices")
    for path, target, fmt in (("/var/lib/vd/instances/bench/disk", "vda", "qcow2"),
                              ("/var/lib/vd/instances/bench/data", "vdb", "raw")):
        disk = sub(devices, "disk", type="file", device="disk")
        sub(disk, "driver", name="qemu", type=fmt)
        sub(disk, "source", file=path)
        sub(disk, "target", dev=target, bus="virtio")
    iface = sub(devices, "interface", type="bridge")
    sub(iface, "mac", address="52:54:00:12:34:56")
    sub(iface, "source", bridge="br0")
    sub(iface, "model", type="virtio")
    serial = sub(devices, "serial", type="file")
    sub(serial, "source", path="/var/lib/vd/instances/bench/console.log")
    sub(serial, "target", port="0")
    console = sub(devices, "console", type="file")
    sub(console, "source", path="/var/lib/vd/instances/bench/console.log")
    sub(console, "target", type="serial", port="0")
    sub(devices, "input", type="tablet", bus="usb")
    sub(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    sub(sub(devices, "video"), "model", type="cirrus")
    return etree.tostring(root, encoding="unicode", pretty_print=True)


INSTANCE = Instance(name="bench-vm", flavor=FLAVOR, image="cirros", uuid=UUID,
                    params={"vnc_bind_address": "127.0.0.1"},
                    nics=(NIC("52:54:00:12:34:56", bridge="br0"),))
DISKS = [BlockDevice("/var/lib/vd/instances/bench/disk", "qcow2"),
         BlockDevice("/var/lib/vd/instances/bench/data", "raw")]


def build_domain_objects():
    return build_domain(INSTANCE, DISKS, INSTANCE.nics, "qemu", 8_002_000, machine="pc",
                        console_log="/var/lib/vd/instances/bench/console.log")


def build_domain_document() -> str:
    return build_domain_objects().to_xml()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus_directory() -> str | None:
    """<project root>/../shared/corpora/libvirt-domains, or beside a further ancestor
    (a git worktree of the project sits deeper than its clone)."""
    directory = os.path.dirname(ROOT)
    while True:
        candidate = os.path.join(directory, "shared", "corpora", "libvirt-domains")
        if os.path.isdir(candidate):
            return candidate
        if os.path.dirname(directory) == directory:
            return None
        directory = os.path.dirname(directory)


def corpus_documents() -> list[bytes]:
    directory = corpus_directory()
    documents = []
    for path in sorted(glob.glob(os.path.join(directory or "", "*", "*.xml"))):
        with open(path, "rb") as f:
            documents.append(f.read())
    return documents


def docs_per_second(func, documents: list[bytes]) -> float:
    start = time.perf_counter()
    for data in documents:
        func(data)
    return len(documents) / (time.perf_counter() - start)


def bare_read(data: bytes) -> str:
    return etree.tostring(etree.fromstring(data, _PARSER), encoding="unicode",
                          pretty_print=True)


def model_read(data: bytes) -> str:
    return Domain.from_xml(data).to_xml()


def median_us(func, rounds: int, number: int) -> float:
    times = timeit.repeat(func, repeat=rounds, number=number)
    return statistics.median(times) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()

    model, bare = model_document(), bare_lxml_document()
    if model != bare:
        raise SystemExit("the two builders disagree; the comparison would be meaningless")
    elements = sum(1 for _ in etree.fromstring(model).iter())

    # Interleave the peers so that machine noise hits both alike; the ratio is
    # taken per round (same seconds of machine time) and its median reported.
    bare_runs, model_runs, guest_runs, checks_runs = [], [], [], []
    for _ in range(args.rounds):
        bare_runs.append(median_us(bare_lxml_document, 1, args.number))
        model_runs.append(median_us(model_document, 1, args.number))
        guest_runs.append(median_us(build_domain_document, 1, args.number))
        checks_runs.append(median_us(build_domain_objects, 1, args.number))
    bare_us, model_us = statistics.median(bare_runs), statistics.median(model_runs)
    guest_us = statistics.median(guest_runs)
    model_ratio = statistics.median(m / b for m, b in zip(model_runs, bare_runs, strict=True))
    guest_ratio = statistics.median(g / b for g, b in zip(guest_runs, bare_runs, strict=True))
    print(f"document: {elements} elements, {len(model)} bytes; "
          f"{args.rounds} rounds x {args.number} documents, medians")
    print(f"bare lxml build + tostring:        {bare_us:8.1f} us/document")
    print(f"virt.domain model + to_xml:        {model_us:8.1f} us/document  "
          f"ratio {model_ratio:.2f}x (target <= 1.30x)")
    print(f"virt.guest.build_domain + to_xml:  {guest_us:8.1f} us/document  "
          f"ratio {guest_ratio:.2f}x (input checks and policy on top)")
    print(f"  of which build_domain alone:     {statistics.median(checks_runs):8.1f} us/document  "
          "(checks, policy, model objects; no element made yet)")

    documents = corpus_documents()
    if not documents:
        print("no corpus at <project root>/../shared/corpora/libvirt-domains: "
              "reading figures skipped")
        return
    bare_rates, model_rates = [], []
    for _ in range(args.rounds):
        bare_rates.append(docs_per_second(bare_read, documents))
        model_rates.append(docs_per_second(model_read, documents))
    ratio = statistics.median(b / m for m, b in zip(model_rates, bare_rates, strict=True))
    print(f"corpus: {len(documents)} documents, parse + serialize, {args.rounds} rounds, medians")
    print(f"bare lxml fromstring + tostring:   {statistics.median(bare_rates):8.0f} documents/s")
    print(f"Domain.from_xml + to_xml:          {statistics.median(model_rates):8.0f} documents/s  "
          f"ratio {ratio:.2f}x (target <= 1.50x)")


if __name__ == "__main__":
    main()
