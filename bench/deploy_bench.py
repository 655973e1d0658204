"""Deployment at scale on a real libvirtd: clones with identity, and clones booted to ready.

Standalone (no pytest)::

    .venv/bin/python bench/deploy_bench.py [--clones 50] [--rounds 2]
        [--boot 10] [--concurrency 1,4,8] [--skip-boot]

(a) ``--clones`` linked clones with identity of one template, made by anyvirt
(``tmpl.clone(..., linked=True, count=N, identity=...)``) and by a hand-written
libvirt-python loop doing the same work per clone: a qcow2 overlay through the
storage pool API (``<backingStore>``), the NoCloud seed ISO written by the same
pycdlib writer (:func:`anyvirt.deployment.seed_iso`) and uploaded into a pool
volume through a stream, and ``defineXML`` of the template's definition with a
new name, UUID and MAC and the seed on a read-only CD-ROM. Each round runs both,
the raw loop first in even rounds and anyvirt first in odd ones; each side's clones
are removed before the other starts. Goal: anyvirt at most 1.2x the raw loop
(the median of the rounds' ratios).

(b) ``--boot`` linked clones with identity of the Linux test guest's boot disk,
under TCG (``?accel=tcg``), made with ``concurrency=K``, then started and
waited for (``vm.wait_ready()``) K at a time; the time from the clone call to
the last clone ready, for each K in ``--concurrency``.

Both run on a daemon in a network namespace of its own with the testbed's
isolated network (DHCP), as the tests do. The machine is shared: every figure
is printed with the 1-minute load average before and after it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import libvirt
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from anyvirt_libvirt.testbed.linux_guest import build_linux_guest
from anyvirt_libvirt.testbed.linux_guest.bootdisk import build_boot_disk
from anyvirt_libvirt.testbed.network import IsolatedNetwork, start_isolated_network

import anyvirt
from anyvirt import DiskSpec, Identity, NicSpec, User, VMSpec
from anyvirt.deployment import compile_nocloud, seed_iso
from anyvirt.model import Overcommit
from anyvirt.vm import VM

T = TypeVar("T")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@bench"
IDENTITY = Identity(users=[User("ops", ssh_keys=[KEY], sudo=True)])
#: 50 one-vCPU clones on a 2-core machine pass the default limit (4 vCPUs per CPU); the
#: clones of (a) never run, and (b)'s are tiny
OVERCOMMIT = Overcommit(cpu=32.0)


#: libvirt-python entry points that never leave the process (object bookkeeping, the
#: client's own state): not round trips to the daemon
LOCAL_CALLS = ("Free", "GetName", "GetUUIDString", "GetUUID", "virGetLastError", "IsAlive",
               "virConnGetLastError", "virResetLastError", "Ref", "EventRunDefaultImpl")


class DaemonCalls:
    """Counts the calls into libvirt's C library that go to the daemon, by name, while
    installed: a measure of the work each side asks for, steady however busy the machine
    (the times are not)."""

    def __init__(self) -> None:
        import libvirtmod  # type: ignore[import-not-found]

        self.module = libvirtmod
        self.counts: dict[str, int] = {}
        self.saved: dict[str, Callable[..., object]] = {}

    def __enter__(self) -> DaemonCalls:
        for name in dir(self.module):
            real = getattr(self.module, name)
            if not name.startswith("vir") or not callable(real) or any(
                    local in name for local in LOCAL_CALLS):
                continue
            self.saved[name] = real

            def counted(*args: object, _name: str = name, _real: Callable[..., object] = real) -> object:
                self.counts[_name] = self.counts.get(_name, 0) + 1
                return _real(*args)

            setattr(self.module, name, counted)
        return self

    def __exit__(self, *_exc: object) -> None:
        for name, real in self.saved.items():
            setattr(self.module, name, real)

    def total(self) -> int:
        return sum(self.counts.values())

    def by_count(self) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))


def load() -> float:
    return os.getloadavg()[0]


def timed(work: Callable[[], T]) -> tuple[T, float, float, float]:
    """(what ``work`` returned, seconds, load before, load after)."""
    before = load()
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started, before, load()


# -- (a) the hand-written libvirt-python loop -------------------------------------------


def _random_mac() -> str:
    return "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))


def _upload(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, data: bytes) -> str:
    vol = pool.createXML(f"<volume><name>{name}</name><capacity>{len(data)}</capacity>"
                         "<target><format type='raw'/></target></volume>", 0)
    stream = conn.newStream(0)
    vol.upload(stream, 0, len(data), 0)
    sent = 0
    while sent < len(data):
        sent += stream.send(data[sent:])
    stream.finish()
    return str(vol.path())


def raw_clones(conn: libvirt.virConnect, template_name: str, prefix: str, count: int) -> list[str]:
    """What a user writes by hand: overlay, seed, define; per clone, one after another."""
    template = ET.fromstring(conn.lookupByName(template_name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    disk = template.find("devices/disk[@device='disk']")
    assert disk is not None
    source, driver = disk.find("source"), disk.find("driver")
    assert source is not None and driver is not None
    base = conn.storageVolLookupByPath(source.get("file"))
    pool = base.storagePoolLookupByVolume()
    capacity = base.info()[1]
    names = []
    for index in range(1, count + 1):
        name = f"{prefix}-{index}"
        overlay = pool.createXML(
            f"<volume><name>{name}.qcow2</name><capacity>{capacity}</capacity>"
            "<target><format type='qcow2'/></target>"
            f"<backingStore><path>{base.path()}</path><format type='{driver.get('type')}'/></backingStore>"
            "</volume>", 0)
        mac = _random_mac()
        seed = compile_nocloud(IDENTITY.resolve(name), [mac])
        seed_path = _upload(conn, pool, f"{name}-cidata.iso", seed_iso(seed))
        root = ET.fromstring(ET.tostring(template))
        root.find("name").text = name  # type: ignore[union-attr]
        uuid_el = root.find("uuid")
        if uuid_el is not None:
            root.remove(uuid_el)
        clone_disk = root.find("devices/disk[@device='disk']")
        clone_disk.find("driver").set("type", "qcow2")  # type: ignore[union-attr]
        clone_disk.find("source").set("file", overlay.path())  # type: ignore[union-attr]
        for mac_el in root.findall("devices/interface/mac"):
            mac_el.set("address", mac)
        devices = root.find("devices")
        cdrom = ET.SubElement(devices, "disk", type="file", device="cdrom")  # type: ignore[arg-type]
        ET.SubElement(cdrom, "driver", name="qemu", type="raw")
        ET.SubElement(cdrom, "source", file=seed_path)
        ET.SubElement(cdrom, "target", dev="sdz", bus="sata")
        ET.SubElement(cdrom, "readonly")
        conn.defineXML(ET.tostring(root, encoding="unicode"))
        names.append(name)
    return names


def anyvirt_clones(template: VM, prefix: str, count: int) -> list[VM]:
    return template.clone(prefix, linked=True, count=count, identity=IDENTITY)


def raw_remove(conn: libvirt.virConnect, names: list[str]) -> None:
    pool = conn.storagePoolLookupByName("default")
    for name in names:
        conn.lookupByName(name).undefine()
        for vol in (f"{name}.qcow2", f"{name}-cidata.iso"):
            pool.storageVolLookupByName(vol).delete(0)


def bench_clones(daemon: LibvirtDaemon, network: IsolatedNetwork, count: int, rounds: int) -> None:
    run = uuid.uuid4().hex[:4]
    with anyvirt.connect(daemon.anyvirt_uri, overcommit=OVERCOMMIT) as host:
        template = host.vms.create(VMSpec(name=f"tmpl-{run}", memory_mib=64,
                                          disks=[DiskSpec(size_gib=0.0625)],
                                          nics=[NicSpec(network=network.name)]))
        template.mark_template()
        conn = daemon.open()
        raw_times, ours_times, ratios = [], [], []
        try:
            for index in range(rounds):
                def raw_round(index: int = index) -> tuple[float, float, float]:
                    made, took, before, after = timed(
                        partial(raw_clones, conn, template.name, f"raw{index}-{run}", count))
                    raw_remove(conn, made)
                    return took, before, after

                def our_round(index: int = index) -> tuple[float, float, float]:
                    clones, took, before, after = timed(
                        partial(anyvirt_clones, template, f"av{index}-{run}", count))
                    for clone in clones:
                        clone.delete(disks=True)
                    return took, before, after

                # who goes first alternates: a machine whose load drifts during a round
                # favours neither side
                if index % 2 == 0:
                    raw, raw_before, raw_after = raw_round()
                    ours, before, after = our_round()
                else:
                    ours, before, after = our_round()
                    raw, raw_before, raw_after = raw_round()
                raw_times.append(raw)
                ours_times.append(ours)
                ratios.append(ours / raw)
                print(f"  round {index + 1}: raw loop {raw:.2f}s (load {raw_before:.1f}->{raw_after:.1f}), "
                      f"anyvirt {ours:.2f}s (load {before:.1f}->{after:.1f}), ratio {ours / raw:.2f}x",
                      flush=True)
            counted: dict[str, DaemonCalls] = {}
            with DaemonCalls() as counted["raw loop"]:
                names = raw_clones(conn, template.name, f"rawc-{run}", count)
            raw_remove(conn, names)
            made: list[VM] = []
            with DaemonCalls() as counted["anyvirt"]:
                made = anyvirt_clones(template, f"avc-{run}", count)
            for clone in made:
                clone.delete(disks=True)
            for side, calls in counted.items():
                print(f"  {side}: {calls.total() / count:.1f} daemon calls per clone "
                      f"({', '.join(f'{n} {name[3:]}' for name, n in calls.by_count())})",
                      flush=True)
        finally:
            conn.close()
            template.delete(disks=True)
    raw_median, ours_median = statistics.median(raw_times), statistics.median(ours_times)
    print(f"(a) {count} linked clones with identity: raw loop median {raw_median:.2f}s "
          f"({raw_median / count * 1000:.0f} ms/clone), anyvirt median {ours_median:.2f}s "
          f"({ours_median / count * 1000:.0f} ms/clone), ratio median {statistics.median(ratios):.2f}x "
          "(goal <= 1.2x)", flush=True)


# -- (b) clones booted to ready ----------------------------------------------------------


def _start_and_wait(vm: VM) -> None:
    vm.start()
    vm.wait_ready(timeout=600)


def boot_to_ready(template: VM, count: int, concurrency: int) -> list[VM]:
    clones = template.clone(f"{template.name}-k{concurrency}", linked=True, count=count,
                            concurrency=concurrency, identity=IDENTITY)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(_start_and_wait, clones))
    return clones


def bench_boot(daemon: LibvirtDaemon, network: IsolatedNetwork, count: int,
               concurrencies: list[int]) -> None:
    disk = build_boot_disk(build_linux_guest())
    run = uuid.uuid4().hex[:4]
    with anyvirt.connect(f"{daemon.anyvirt_uri}&accel=tcg", overcommit=OVERCOMMIT) as host:
        template = host.vms.create(VMSpec(name=f"boot-{run}", cpus=1, memory_mib=192,
                                          disks=[DiskSpec(image=str(disk))],
                                          nics=[NicSpec(network=network.name)]))
        template.mark_template()
        try:
            for concurrency in concurrencies:
                clones, took, before, after = timed(partial(boot_to_ready, template, count, concurrency))
                print(f"(b) {count} clones cloned + started + ready at concurrency {concurrency}: "
                      f"{took:.1f}s (load {before:.1f}->{after:.1f})", flush=True)
                for clone in clones:
                    clone.stop(force=True)
                    clone.delete(disks=True)
        finally:
            template.delete(disks=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clones", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--boot", type=int, default=10)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--skip-clones", action="store_true")
    parser.add_argument("--skip-boot", action="store_true")
    args = parser.parse_args()
    daemon = LibvirtDaemon(name="deploy-bench", private_network=True).start()
    try:
        conn = daemon.open()
        try:
            network = start_isolated_network(conn)
        finally:
            conn.close()
        if not args.skip_clones:
            bench_clones(daemon, network, args.clones, args.rounds)
        if not args.skip_boot:
            bench_boot(daemon, network, args.boot, [int(k) for k in args.concurrency.split(",")])
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
