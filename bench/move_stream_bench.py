"""Benchmark: streamed moves from a libvirt daemon to vcsim, remote and local, against by hand.

Two sources, one run:

* ``remote``: a real libvirtd in its own mount namespace whose pool is a directory
  only that namespace sees (``/var/lib/libvirt/images`` there): this process cannot
  read its files, as with a daemon on another machine, so the disk is streamed through
  the daemon (``virStorageVolDownload`` ranges behind an NBD export, decoded by
  ``qemu-storage-daemon`` into a raw view the vSphere import reads);
* ``local``: the testbed's usual pool, which this process reads in place.

For each: a 1 GiB disk (``--size-mib``) whose first half is random; one verified
``anyvirt.migrate(vm, to=vcsim)`` timed straight (no relay), then one more through two
counting relays (a UNIX-socket relay in front of the daemon, a TCP relay in front of
vcsim) for the wire bytes of the copy (until the verification starts) and of the
verification; and the by-hand pipeline ``virsh vol-download`` | ``qemu-img convert -O
raw`` | ``curl -T`` with each stage timed alone (``bench/move_bench.py``'s).

A standalone program, not a test: figures are printed, never asserted.

    .venv/bin/python bench/move_stream_bench.py [--size-mib 1024] [--runs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from move_support import (
    MIB,
    CountingProxy,
    UnixCountingProxy,
    by_hand,
    move_testbed,
    timed_move,
)


def move(kvm_uri: str, vc_uri: str, password: str, vm_name: str,
         relays: tuple[CountingProxy, CountingProxy] | None = None) -> dict[str, Any]:
    """One verified move, timed by phase; with ``relays`` (source, target), the bytes each
    relay carried when the verification began."""
    moved = timed_move(kvm_uri, vc_uri, password, vm_name, relays or ())
    verifying = moved["verifying"]
    return {"total": moved["total"], "copy": verifying, "verify": moved["total"] - verifying,
            "methods": moved["methods"], "at_verify": moved["at_verify"] or (0, 0)}


def one_source(kind: str, size: int, tmp: Path) -> dict[str, Any]:
    import anyvirt

    work = tmp / kind
    work.mkdir()
    with move_testbed(work, size, name=f"bench-{kind}", remote=kind == "remote") as bed:
        daemon, sim, path = bed.daemon, bed.sim, bed.path
        readable = os.access(path, os.R_OK)
        timed = move(daemon.anyvirt_uri, sim.anyvirt_uri_with_ca, sim.password, "bench")
        source_relay = UnixCountingProxy(str(daemon.socket_path))
        target_relay = CountingProxy(sim.port)
        kvm_uri = daemon.anyvirt_uri.replace(str(daemon.socket_path), source_relay.path)
        vc_uri = sim.anyvirt_uri_with_ca.replace(f":{sim.port}?", f":{target_relay.port}?")
        counted = move(kvm_uri, vc_uri, sim.password, "bench", (source_relay, target_relay))
        with anyvirt.connect(sim.anyvirt_uri_with_ca, password=sim.password) as vc:
            hand = by_hand(daemon, Path(path).name, vc, sim, work)
        source_copy, target_copy = counted["at_verify"]
        return {"kind": kind, "readable": readable, "data": bed.data, "moved": timed,
                "hand": hand, "methods": timed["methods"],
                "wire": {"source_copy": source_copy, "target_copy": target_copy,
                         "source_verify": source_relay.total - source_copy,
                         "target_verify": target_relay.total - target_copy}}


def report(found: dict[str, Any]) -> None:
    hand, moved, wire, data = found["hand"], found["moved"], found["wire"], found["data"]
    slowest = max(hand["download"], hand["convert"], hand["upload"])
    print(f"== {found['kind']} daemon (its files readable here: {found['readable']}); "
          f"{data / MIB:.0f} MiB allocated")
    print(f"by hand: download {hand['download']:.2f} s, convert {hand['convert']:.2f} s, upload "
          f"{hand['upload']:.2f} s; total {hand['total']:.2f} s; slowest {slowest:.2f} s")
    print(f"anyvirt: copy {moved['copy']:.2f} s, verification {moved['verify']:.2f} s "
          f"({', '.join(found['methods'])}), whole {moved['total']:.2f} s")
    print(f"ratios: copy / slowest stage {moved['copy'] / slowest:.2f}x (target <= 1.10x); "
          f"verified move / by-hand total {moved['total'] / hand['total']:.2f}x (target <= 1.5x)")
    print(f"wire / allocated: copy to vcsim {wire['target_copy'] / data:.3f}x, from the daemon "
          f"{wire['source_copy'] / data:.3f}x (target <= 1.1x); verification from vcsim "
          f"{wire['target_verify'] / data:.3f}x (target <= 1.1x), from the daemon "
          f"{wire['source_verify'] / data:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--sources", default="remote,local")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="anyvirt-bench-") as tmp:
        for run in range(args.runs):
            for kind in args.sources.split(","):
                where = Path(tmp) / f"run{run}"
                where.mkdir(exist_ok=True)
                report(one_source(kind, args.size_mib * MIB, where))


if __name__ == "__main__":
    if shutil.which("virsh") is None or shutil.which("curl") is None:
        sys.exit("needs virsh (libvirt-clients) and curl")
    with contextlib.suppress(KeyboardInterrupt):
        main()
