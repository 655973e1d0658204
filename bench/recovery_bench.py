"""Benchmark: from ``anyvirt.recover`` to "running" for VMs on shared storage (libvirt).

Starts two isolated libvirtd daemons (A and B) with a pool ``shared`` on one
directory, makes ``--vms`` VMs of the tiny demo guest on A in that pool, starts
them and waits until each guest writes its disk, then cuts A's power (the daemon
and its QEMUs are killed) and times ``anyvirt.recover(failed=A, to=B)`` on a fresh
connection to B: it returns once every VM is defined and started on B ("running";
the guests' own boot is excluded). Phases come from its progress lines. Repeated
``--rounds`` times, each on fresh daemons.

A standalone program, not a test: figures are printed, never asserted.

    .venv/bin/python bench/recovery_bench.py [--vms 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from anyvirt_libvirt.demo_image import build_image, wait_for_counter
from anyvirt_libvirt.testbed import daemon as daemons

import anyvirt
from anyvirt import DiskSpec, Overcommit, VMSpec
from anyvirt.recovery import RecoveredFrom


def add_shared_pool(daemon: daemons.LibvirtDaemon, directory: Path) -> None:
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = "shared"
    ET.SubElement(ET.SubElement(root, "target"), "path").text = str(directory)
    conn = daemon.open()
    try:
        pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
        pool.create(0)
    finally:
        conn.close()


def raw_starts(daemon: daemons.LibvirtDaemon) -> float:
    """The floor: the same domains powered off, then started by plain libvirt-python, one
    thread each (what the recovery's start step does through anyvirt)."""
    conn = daemon.open()
    try:
        doms = conn.listAllDomains(0)
        for dom in doms:
            dom.destroy()
        t0 = time.monotonic()
        with ThreadPoolExecutor(len(doms)) as pool:
            list(pool.map(lambda d: d.create(), doms))
        return time.monotonic() - t0
    finally:
        conn.close()


def one_round(count: int, image: Path) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="avrb-"))
    (base / "shared").mkdir()
    a = daemons.LibvirtDaemon(base / "a", name="a")
    b = daemons.LibvirtDaemon(base / "b", name="b")
    try:
        for daemon in (a, b):
            daemon.start()
            add_shared_pool(daemon, base / "shared")
        with anyvirt.connect(a.anyvirt_uri, overcommit=Overcommit.unlimited()) as ha:  # 10 x 1 vCPU
            vms = [ha.vms.create(VMSpec(name=f"rb{i}", cpus=1, memory_mib=16, nics=[],
                                        disks=[DiskSpec(image=str(image), storage="shared")]))
                   for i in range(count)]
            for vm in vms:
                vm.start()
            for vm in vms:
                wait_for_counter(Path(vm.info().extra["console_log"]), 1, timeout=120)
        a.kill()
        daemons._kill_processes_seeing(a.workdir / "run", grace=10.0)
        with anyvirt.connect(b.anyvirt_uri, overcommit=Overcommit.unlimited()) as hb:
            marks: list[tuple[float, str]] = []
            t0 = time.monotonic()
            recovery = anyvirt.recover(failed=a.anyvirt_uri, to=hb,
                                       progress=lambda line: marks.append((time.monotonic(), line)))
            total = time.monotonic() - t0
            assert all(r.outcome is RecoveredFrom.SHARED_STORAGE for r in recovery), recovery
            assert len(recovery) == count
        raw = raw_starts(b)
        first_define = next(t for t, line in marks if "defining" in line)
        reading = next(t for t, line in marks if "reading definition records" in line)
        starting = next(t for t, line in marks if line.startswith("starting "))
        return {"total": total, "probe": reading - t0, "records+locks": first_define - reading,
                "define": starting - first_define, "start+marks": t0 + total - starting,
                "raw libvirt start of the same VMs": raw}
    finally:
        for daemon in (a, b):
            daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    image = build_image(Path(tempfile.mkdtemp(prefix="avrb-img-")))
    rounds = []
    for n in range(args.rounds):
        figures = one_round(args.vms, image)
        rounds.append(figures)
        print(f"round {n + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in figures.items()), flush=True)
    print(f"{args.vms} VMs from shared storage, recover -> running (guest boot excluded), "
          f"median of {args.rounds}: "
          + ", ".join(f"{k} {statistics.median(r[k] for r in rounds):.2f} s" for k in rounds[0]))
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; goal <= 10 s")


if __name__ == "__main__":
    main()
