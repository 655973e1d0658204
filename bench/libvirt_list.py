"""Listing 2,000 libvirt domains: raw libvirt vs anyvirt vs apache-libcloud, side by side.

Standalone (no pytest): ``.venv/bin/python bench/libvirt_list.py [--domains N] [--qemu]``.

Starts an isolated libvirtd (``anyvirt_libvirt.testbed.daemon``) and serves
a libvirt test-driver file with N domains through it (``test+unix://``), so
every call is a real RPC to a real daemon. With ``--qemu`` it also defines N
shut-off QEMU domains in the daemon's QEMU driver, which (unlike the test
driver) reports every stat group, and lists those too.

Calls are counted by wrapping the libvirt connection object (and the domain
objects it returns) *in this benchmark only*. ``name()``, ``UUIDString()``
and ``isAlive()`` are answered locally by libvirt and counted apart.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
from anyvirt_libvirt.testbed.daemon import (
    LibvirtDaemon,
    make_test_driver_file,
    uri_for_test_driver_file,
)

import anyvirt

LOCAL = {"name", "UUIDString", "UUID", "isAlive", "ID"}
STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON
)


class Counting:
    """Wraps a libvirt object; counts method calls; wraps the libvirt objects it returns."""

    def __init__(self, target: Any, counts: Counter[str]) -> None:
        self._target = target
        self._counts = counts

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            key = "local" if attr in LOCAL else "rpc"
            self._counts[key] += 1
            self._counts[f"{key}:{attr}"] += 1
            return self._wrap(value(*args, **kwargs))

        return call

    def _wrap(self, result: Any) -> Any:
        if isinstance(result, libvirt.virDomain):
            return Counting(result, self._counts)
        if isinstance(result, list):
            return [self._wrap(item) for item in result]
        if isinstance(result, tuple):
            return tuple(self._wrap(item) for item in result)
        return result


def best_of(runs: int, work: Callable[[], int]) -> tuple[float, int]:
    """The best of ``runs`` timings (the machine's noise only ever adds time)."""
    best, found = float("inf"), 0
    work()  # warm-up: first-call costs (imports, caches) are not listing costs
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        found = work()
        best = min(best, time.perf_counter() - started)
    return best, found


def raw(uri: str, counts: Counter[str]) -> tuple[float, int]:
    """The floor: one listAllDomains + one getAllDomainStats, nothing else."""
    conn = libvirt.open(uri)

    def work(c: Any) -> int:
        c.listAllDomains(0)
        return len(c.getAllDomainStats(STATS, 0))

    try:
        timing = best_of(15, lambda: work(conn))  # timed unwrapped: wrappers cost time too
        work(Counting(conn, counts))  # one more run, counted
        return timing
    finally:
        conn.close()


def with_anyvirt(uri: str, counts: Counter[str]) -> tuple[float, int]:
    host = anyvirt.connect("libvirt+" + uri)
    link = host.driver.link  # type: ignore[attr-defined]
    try:
        timing = best_of(15, lambda: len(host.vms.list()))
        real = link.conn
        link._conn = Counting(real, counts)
        try:
            host.vms.list()
        finally:
            link._conn = real
        return timing
    finally:
        host.close()


def with_libcloud(uri: str, counts: Counter[str]) -> tuple[float, int]:
    from libcloud.compute.drivers.libvirt_driver import LibvirtNodeDriver

    driver: Any = LibvirtNodeDriver(uri)  # libcloud ships no type hints
    real = driver.connection
    try:
        timing = best_of(1, lambda: len(driver.list_nodes()))
        driver.connection = Counting(real, counts)
        driver.list_nodes()
        return timing
    finally:
        real.close()


def define_qemu_domains(uri: str, count: int) -> None:
    conn = libvirt.open(uri)
    try:
        for index in range(count):
            dom = ET.Element("domain", type="qemu")
            ET.SubElement(dom, "name").text = f"bench-{index:05d}"
            ET.SubElement(dom, "uuid").text = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{index}"))
            ET.SubElement(dom, "memory", unit="MiB").text = "64"
            ET.SubElement(dom, "vcpu").text = "1"
            os_el = ET.SubElement(dom, "os")
            ET.SubElement(os_el, "type", arch="x86_64").text = "hvm"
            conn.defineXML(ET.tostring(dom, encoding="unicode"))
    finally:
        conn.close()


def compare(title: str, uri: str, libcloud_too: bool = True) -> None:
    rows = []
    for label, fn in (("raw libvirt", raw), ("anyvirt", with_anyvirt),
                      ("apache-libcloud", with_libcloud)):
        if label == "apache-libcloud" and not libcloud_too:
            continue
        counts: Counter[str] = Counter()
        seconds, found = fn(uri, counts)
        detail = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in counts.most_common()
                           if k.startswith("rpc:"))
        rows.append((label, seconds, found, counts["rpc"], counts["local"], detail))
    print(f"\n{title}")
    print(f"{'':16} {'seconds':>9} {'domains':>8} {'RPCs':>6} {'local':>6}  RPCs by method")
    for label, seconds, found, rpcs, local, detail in rows:
        print(f"{label:16} {seconds:9.4f} {found:8d} {rpcs:6d} {local:6d}  {detail}")
    times = {label: seconds for label, seconds, *_ in rows}
    ratio = times["anyvirt"] / times["raw libvirt"]
    print(f"anyvirt / raw: {ratio:.2f}x (target <= 1.25x)")
    if "apache-libcloud" in times:
        speedup = times["apache-libcloud"] / times["anyvirt"]
        print(f"apache-libcloud / anyvirt: {speedup:.1f}x (target >= 10x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=2000)
    parser.add_argument("--qemu", action="store_true",
                        help="also list N shut-off QEMU domains (all stat groups reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="anyvirt-bench-") as tmp:
        daemon = LibvirtDaemon(Path(tmp) / "daemon", name="bench").start()
        try:
            path = make_test_driver_file(Path(tmp) / "domains.xml", args.domains)
            uri = uri_for_test_driver_file(path, daemon)
            compare(f"{args.domains} test-driver domains behind a real libvirtd ({uri.split('?')[0]})",
                    uri)
            if args.qemu:
                define_qemu_domains(daemon.uri, args.domains)
                compare(f"{args.domains} shut-off QEMU domains in a real libvirtd", daemon.uri)
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
