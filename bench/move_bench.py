"""Benchmark: moving a disk from a real libvirtd to vcsim, against doing it by hand.

Starts an isolated libvirtd and a vcsim (ESXi mode), makes a VM on libvirt whose
disk is ``--size-mib`` MiB (the first half random, the rest zeros), then:

* ``anyvirt``: ``anyvirt.migrate(vm, to=vcsim)``, verified (every disk read
  back and compared), timed by phase from its progress messages;
* ``by hand``: what an expert would run: ``virsh vol-download``, ``qemu-img
  convert -O raw``, ``curl -T`` to the datastore's ``/folder`` URL; each stage
  timed on its own;
* bytes on the wire to and from vcsim, counted by a loopback proxy in front of it
  on a second move (the timed one goes straight to vcsim, as curl does: a Python
  relay costs CPU), until the read-back starts and for the whole move, against
  the data actually allocated in the source image;
* peak RSS of a whole move in a fresh process at two disk sizes.

A standalone program, not a test: figures are printed, never asserted.

    .venv/bin/python bench/move_bench.py [--size-mib 1024] [--rss-sizes 256,2048]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from move_support import MIB, CountingProxy, by_hand, move_testbed, timed_move


def anyvirt_move(kvm_uri: str, vc_uri: str, password: str, vm_name: str,
                 proxy: CountingProxy | None = None) -> dict[str, Any]:
    """One verified move, timed by phase; with ``proxy``, the bytes both ways when the copy
    ended and the read-back began (the copy's wire bytes apart from the verification's)."""
    moved = timed_move(kvm_uri, vc_uri, password, vm_name, [proxy] if proxy else [])
    importing, verifying = moved["importing"], moved["verifying"]
    return {"total": moved["total"], "export": importing, "import": verifying - importing,
            "verify": moved["total"] - verifying, "verified": moved["verified"],
            "methods": moved["methods"], "copy_wire": sum(moved["at_verify"])}


def peak_rss_mib(reset: bool = False) -> float:
    """This process's peak RSS (VmHWM); ``reset`` first lowers the mark to the current RSS
    (Linux: ``clear_refs`` 5), so a phase can be measured on its own."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_rss(size_mib: int) -> None:
    """In a fresh process: set up, move once, print peak RSS (MiB) of this process."""
    with tempfile.TemporaryDirectory(prefix="anyvirt-bench-") as tmp, \
            move_testbed(Path(tmp), size_mib * MIB, name="bench-rss", vm_name="rss") as bed:
        baseline = peak_rss_mib(reset=True)  # the setup's peak does not count
        anyvirt_move(bed.daemon.anyvirt_uri, bed.sim.anyvirt_uri_with_ca, bed.sim.password, "rss")
        print(json.dumps({"size_mib": size_mib, "peak_rss_mib": peak_rss_mib(),
                          "before_move_mib": baseline}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-sizes", default="256,2048")
    parser.add_argument("--child-rss", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(args.child_rss)
        return

    import anyvirt

    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="anyvirt-bench-") as tmp, \
            move_testbed(Path(tmp), size) as bed:
        daemon, sim, path, data = bed.daemon, bed.sim, bed.path, bed.data
        proxy = CountingProxy(sim.port)
        vc_uri = sim.anyvirt_uri_with_ca.replace(f":{sim.port}?", f":{proxy.port}?")
        # timed straight to vcsim, like curl below; bytes counted on a second move
        # through the proxy (a Python relay costs CPU the timing must not pay)
        moved = anyvirt_move(daemon.anyvirt_uri, sim.anyvirt_uri_with_ca, sim.password, "bench")
        counted = anyvirt_move(daemon.anyvirt_uri, vc_uri, sim.password, "bench", proxy)
        wire = proxy.up + proxy.down
        with anyvirt.connect(sim.anyvirt_uri_with_ca, password=sim.password) as vc:
            hand = by_hand(daemon, Path(path).name, vc, sim, Path(tmp))
    slowest = max(hand["download"], hand["convert"], hand["upload"])
    print(f"disk: {args.size_mib} MiB virtual, {data / MIB:.0f} MiB allocated (half random)")
    print(f"by hand: download {hand['download']:.2f} s, convert {hand['convert']:.2f} s, "
          f"upload {hand['upload']:.2f} s; total {hand['total']:.2f} s, slowest stage "
          f"{slowest:.2f} s")
    print(f"anyvirt: {moved['total']:.2f} s (export {moved['export']:.2f}, import "
          f"{moved['import']:.2f}, verify by read-back {moved['verify']:.2f}); verified "
          f"{', '.join(moved['verified'])} by {', '.join(moved['methods'])}")
    copy_only = moved["export"] + moved["import"]
    print(f"ratios: anyvirt / by-hand total {moved['total'] / hand['total']:.2f}x; copy (without "
          f"the read-back) / by-hand total {copy_only / hand['total']:.2f}x; copy / slowest "
          f"stage {copy_only / slowest:.2f}x (target <= 1.10x)")
    copy_wire = counted["copy_wire"]
    print(f"wire, the copy (to and from vcsim until the read-back starts): "
          f"{copy_wire / MIB:.1f} MiB = {copy_wire / max(data, 1):.3f}x the allocated data "
          f"(target <= 1.05x)")
    print(f"wire, the whole move with its read-back: {wire / MIB:.0f} MiB = "
          f"{wire / max(data, 1):.2f}x (up {proxy.up / MIB:.0f} MiB, down "
          f"{proxy.down / MIB:.0f} MiB)")
    for rss_size in (int(s) for s in args.rss_sizes.split(",") if s):
        out = subprocess.run([sys.executable, __file__, "--child-rss", str(rss_size)], check=True,
                             capture_output=True, text=True).stdout
        print(f"peak RSS, {rss_size} MiB disk: {json.loads(out.splitlines()[-1])}")


if __name__ == "__main__":
    if shutil.which("virsh") is None or shutil.which("curl") is None:
        sys.exit("needs virsh (libvirt-clients) and curl")
    main()
