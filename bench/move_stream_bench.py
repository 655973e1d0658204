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
import socket
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from move_bench import MIB, CountingProxy, allocated, by_hand, make_image

REMOTE_POOL = "/var/lib/libvirt/images"  # inside the daemon's namespace only


class UnixCountingProxy(CountingProxy):
    """:class:`CountingProxy` for a UNIX socket (a libvirt daemon's)."""

    def __init__(self, path: str) -> None:
        self.upstream_path = path
        self.up = self.down = 0
        self._dir = tempfile.mkdtemp(prefix="bench-relay-")
        self.path = os.path.join(self._dir, "sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(16)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream_path)
            threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "down"), daemon=True).start()


def make_pool_remote(uri: str) -> None:
    """The daemon's default pool becomes a directory only its mount namespace has."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        old = conn.storagePoolLookupByName("default")
        if old.isActive():
            old.destroy()
        old.undefine()
        root = ET.Element("pool", type="dir")
        ET.SubElement(root, "name").text = "default"
        ET.SubElement(ET.SubElement(root, "target"), "path").text = REMOTE_POOL
        pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
        pool.build(0)
        pool.create(0)
    finally:
        conn.close()


def move(kvm_uri: str, vc_uri: str, password: str, vm_name: str,
         relays: tuple[CountingProxy, CountingProxy] | None = None) -> dict[str, Any]:
    """One verified move, timed by phase; with ``relays`` (source, target), the bytes each
    relay carried when the verification began."""
    import anyvirt

    marks: list[tuple[float, str]] = []
    at_verify: list[tuple[int, int]] = []

    def seen(task: Any) -> None:
        message = task.message or ""
        if relays is not None and "verifying" in message and not at_verify:
            source, target = relays
            at_verify.append((source.up + source.down, target.up + target.down))
        marks.append((time.monotonic(), message))

    with anyvirt.connect(kvm_uri) as kvm, anyvirt.connect(vc_uri, password=password) as vc:
        vm = kvm.vms.get(vm_name)
        began = time.monotonic()
        result = anyvirt.migrate(vm, to=vc, name=f"{vm_name}-moved", on_progress=seen)
        total = time.monotonic() - began
        vc.vms.get(result.vm_id).delete(disks=True)
    verifying = next((t - began for t, m in marks if "verifying" in m), float("nan"))
    return {"total": total, "copy": verifying, "verify": total - verifying,
            "methods": [d.method for d in result.disks],
            "read_back": sum(getattr(d, "read_back_bytes", 0) or 0 for d in result.disks),
            "at_verify": at_verify[0] if at_verify else (0, 0)}


def one_source(kind: str, size: int, tmp: Path) -> dict[str, Any]:
    from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
    from anyvirt_vsphere.testbed.vcsim import Vcsim

    import anyvirt
    from anyvirt.model import DiskSpec, VMSpec

    work = tmp / kind
    work.mkdir()
    daemon = LibvirtDaemon(name=f"bench-{kind}").start()
    try:
        if kind == "remote":
            make_pool_remote(daemon.uri)
        with Vcsim(esx=True, vms=0, workdir=work / "vc") as sim:
            image = work / "disk.raw"
            make_image(image, size)
            data = allocated(str(image))
            with anyvirt.connect(daemon.anyvirt_uri) as kvm:
                vm = kvm.vms.create(VMSpec(name="bench", cpus=1, memory_mib=16,
                                           disks=[DiskSpec(image=str(image))]))
                path = vm.info().disks[0].path
                assert path is not None
            image.unlink()
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
            return {"kind": kind, "readable": readable, "data": data, "moved": timed,
                    "hand": hand, "methods": timed["methods"],
                    "wire": {"source_copy": source_copy, "target_copy": target_copy,
                             "source_verify": source_relay.up + source_relay.down - source_copy,
                             "target_verify": target_relay.up + target_relay.down - target_copy}}
    finally:
        daemon.stop()


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
