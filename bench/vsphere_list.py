"""Benchmark: listing 5,000 VMs from a simulated vCenter, four ways.

Starts vcsim with ``-dc 1 -cluster 2 -host 4 -standalone-host 0 -pool 0
-vm 2500`` (2,500 VMs in each cluster's root pool: 5,000) and lists every VM
with name, power state, CPUs, memory and instance UUID:

* ``handwritten``: one container view, one RetrievePropertiesEx with exactly
  those five paths (plus continuations), written by hand with pyVmomi;
* ``anyvirt``: ``host.vms.list()`` (cold: the container view is made too);
* ``libcloud``: apache-libcloud's ``VSphereNodeDriver.list_nodes()``;
* ``naive``: pyVmomi attribute walks per VM (``vm.name``, ``vm.config...``),
  stopped after a time limit and extrapolated to all VMs.

Each way runs in a fresh Python process, timed once, then run again under
``tracemalloc`` for its peak of Python allocations (connection included; the
naive walk's traced run is cut at 5 s, so its peak is a lower bound). Round trips are counted by
wrapping ``http.client``'s request (every SOAP request of pyVmomi, libcloud's
and anyvirt's included, is sent through it) for the benchmark only; login is
not counted.

    .venv/bin/python bench/vsphere_list.py [--vms-per-pool 2500] [--naive-limit 60]
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PATHS = [
    "name",
    "runtime.powerState",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.instanceUuid",
]


# ------------------------------------------------------------------ in the child process


def _count_round_trips() -> list[int]:
    """Count HTTP requests: every SOAP call of every client here goes through http.client."""
    import http.client

    counter = [0]
    original = http.client.HTTPConnection.request

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(self, *args, **kwargs)

    http.client.HTTPConnection.request = counting  # type: ignore[method-assign]
    return counter


def _pyvmomi_connect(cfg: dict[str, Any]) -> Any:
    from pyVim.connect import SmartConnect

    ctx = ssl.create_default_context(cafile=cfg["ca"])
    return SmartConnect(host=cfg["host"], port=cfg["port"], user=cfg["user"],
                        pwd=cfg["password"], sslContext=ctx)


def run_handwritten(cfg: dict[str, Any], counter: list[int]) -> tuple[int, float]:
    from pyVmomi import vim, vmodl

    si = _pyvmomi_connect(cfg)
    content = si.RetrieveContent()
    pc = vmodl.query.PropertyCollector
    counter[0] = 0
    started = time.perf_counter()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[
            pc.TraversalSpec(name="v", path="view", skip=False, type=vim.view.ContainerView)])],
        propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=PATHS)],
    )
    rows = []
    result = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
    while result is not None:
        rows += [{p.name: p.val for p in obj.propSet} for obj in result.objects]
        if not result.token:
            break
        result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
    view.DestroyView()
    return len(rows), time.perf_counter() - started


def run_anyvirt(cfg: dict[str, Any], counter: list[int]) -> tuple[int, float]:
    import anyvirt

    host = anyvirt.connect(cfg["uri"], password=cfg["password"])
    counter[0] = 0
    started = time.perf_counter()
    vms = host.vms.list()
    rows = [(vm.name, vm.state, vm.cpus, vm.memory_mib, vm.id) for vm in vms]
    seconds = time.perf_counter() - started
    trips = counter[0]
    host.close()  # its DestroyView and Logout are not part of the listing
    counter[0] = trips
    return len(rows), seconds


def run_libcloud(cfg: dict[str, Any], counter: list[int]) -> tuple[int, float]:
    from libcloud.compute.drivers.vsphere import VSphereNodeDriver

    driver = VSphereNodeDriver(cfg["host"], cfg["user"], cfg["password"], port=cfg["port"],
                               ca_cert=cfg["ca"])
    counter[0] = 0
    started = time.perf_counter()
    nodes = driver.list_nodes()
    rows = [(n.name, n.state, n.extra.get("cpus"), n.extra.get("memory_MB"), n.id) for n in nodes]
    return len(rows), time.perf_counter() - started


def run_naive(cfg: dict[str, Any], counter: list[int]) -> tuple[int, float]:
    """The attribute walk; returns the extrapolated time for every VM if it hit the limit."""
    from pyVmomi import vim

    si = _pyvmomi_connect(cfg)
    content = si.RetrieveContent()
    counter[0] = 0
    started = time.perf_counter()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    vms = view.view
    limit = cfg["naive_limit"]
    rows = []
    for vm in vms:
        rows.append((vm.name, vm.runtime.powerState, vm.config.hardware.numCPU,
                     vm.config.hardware.memoryMB, vm.config.instanceUuid))
        if time.perf_counter() - started > limit:
            break
    seconds = time.perf_counter() - started
    if len(rows) < len(vms):  # extrapolate time and round trips to the whole inventory
        scale = len(vms) / len(rows)
        counter[0] = int(counter[0] * scale)
        cfg["extrapolated_from"] = len(rows)
        return len(vms), seconds * scale
    return len(rows), seconds


WAYS = {
    "handwritten": run_handwritten,
    "anyvirt": run_anyvirt,
    "libcloud": run_libcloud,
    "naive": run_naive,
}


def child(way: str, cfg: dict[str, Any]) -> None:
    import tracemalloc

    counter = _count_round_trips()
    import libcloud.compute.drivers.vsphere  # noqa: F401

    import anyvirt  # noqa: F401 - import cost outside the measurement for every way

    count, seconds = WAYS[way](cfg, counter)
    trips = counter[0]
    extrapolated_from = cfg.pop("extrapolated_from", None)
    # a second run under tracemalloc gives the peak of Python allocations
    # (the timed run above is not slowed by tracing; the naive walk is cut short)
    cfg["naive_limit"] = min(cfg["naive_limit"], 5.0)
    tracemalloc.start()
    WAYS[way](cfg, counter)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({
        "way": way, "vms": count, "seconds": seconds, "round_trips": trips,
        "peak_mib": peak / (1024 * 1024),
        "extrapolated_from": extrapolated_from,
    }))


# ------------------------------------------------------------------ the driver process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms-per-pool", type=int, default=2500)
    parser.add_argument("--naive-limit", type=float, default=60.0,
                        help="seconds before the naive walk stops and extrapolates")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, json.loads(args.config))
        return 0

    from anyvirt_vsphere.testbed.vcsim import Vcsim

    shm = Path("/dev/shm")
    workdir = Path(tempfile.mkdtemp(prefix="anyvirt-bench-", dir=shm if shm.is_dir() else None))
    sim = Vcsim(clusters=2, hosts=4, standalone_hosts=0, pools=0, vms=args.vms_per_pool,
                workdir=workdir)
    print(f"starting vcsim with {2 * args.vms_per_pool} VMs ...", flush=True)
    sim.start(timeout=600)
    print(f"vcsim up in {sim.startup_seconds:.1f} s on {sim.host}:{sim.port}", flush=True)
    cfg = {"host": sim.host, "port": sim.port, "user": sim.username, "password": sim.password,
           "ca": str(sim.ca_file), "uri": sim.anyvirt_uri_with_ca, "naive_limit": args.naive_limit}
    results: dict[str, dict[str, Any]] = {}
    try:
        for way in args.ways.split(","):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", way, "--config", json.dumps(cfg)],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                print(f"{way}: failed\n{proc.stderr[-2000:]}", flush=True)
                continue
            results[way] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = results[way]
            print(f"  {way:12s} done: {r['vms']} VMs in {r['seconds']:.2f} s", flush=True)
    finally:
        sim.stop()
    report(results)
    return 0


def report(results: dict[str, dict[str, Any]]) -> None:
    print()
    print(f"{'way':12s} {'VMs':>6s} {'seconds':>9s} {'round trips':>12s} {'peak MiB':>9s}")
    for way, r in results.items():
        note = f"  (extrapolated from {r['extrapolated_from']} VMs)" if r["extrapolated_from"] else ""
        print(f"{way:12s} {r['vms']:6d} {r['seconds']:9.2f} {r['round_trips']:12d} "
              f"{r['peak_mib']:9.1f}{note}")
    if "anyvirt" in results and "handwritten" in results:
        ratio = results["anyvirt"]["seconds"] / results["handwritten"]["seconds"]
        verdict = "ok" if ratio <= 1.25 else "TOO SLOW"
        print(f"\nanyvirt / hand-written PropertyCollector: {ratio:.2f}x (goal <= 1.25x: {verdict})")
    for other in ("libcloud", "naive"):
        if "anyvirt" in results and other in results:
            speedup = results[other]["seconds"] / results["anyvirt"]["seconds"]
            goal = " (goal >= 10x: " + ("ok" if speedup >= 10 else "MISSED") + ")" \
                if other == "libcloud" else ""
            print(f"anyvirt is {speedup:.1f}x faster than {other}{goal}")


if __name__ == "__main__":
    sys.exit(main())
