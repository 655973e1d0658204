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
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class CountingProxy:
    """Relays a TCP port and counts bytes each way (TLS passes through untouched)."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.up = self.down = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "down"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 20):
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def make_image(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        left = size // 2
        while left:
            chunk = min(left, 8 * MIB)
            handle.write(os.urandom(chunk))
            left -= chunk
        handle.truncate(size)


def allocated(path: str) -> int:
    """Bytes of data qemu-img says the image holds (zeros and holes not counted)."""
    out = subprocess.run(["qemu-img", "map", "--output=json", "-U", path], check=True,
                         capture_output=True, text=True).stdout
    return sum(e["length"] for e in json.loads(out) if e.get("data") and not e.get("zero"))


def timed(args: list[str], env: dict[str, str] | None = None) -> float:
    began = time.monotonic()
    subprocess.run(args, check=True, capture_output=True, env=env)
    return time.monotonic() - began


def anyvirt_move(kvm_uri: str, vc_uri: str, password: str, vm_name: str,
                 proxy: CountingProxy | None = None) -> dict[str, Any]:
    """One verified move, timed by phase; with ``proxy``, the bytes each way when the copy
    ended and the read-back began (the copy's wire bytes apart from the verification's)."""
    import anyvirt

    marks: list[tuple[float, str]] = []
    at_verify: list[tuple[int, int]] = []

    def seen(task: Any) -> None:
        message = task.message or ""
        if proxy is not None and "verifying" in message and not at_verify:
            at_verify.append((proxy.up, proxy.down))
        marks.append((time.monotonic(), message))

    with anyvirt.connect(kvm_uri) as kvm, anyvirt.connect(vc_uri, password=password) as vc:
        vm = kvm.vms.get(vm_name)
        began = time.monotonic()
        result = anyvirt.migrate(vm, to=vc, name=f"{vm_name}-moved", on_progress=seen)
        total = time.monotonic() - began
        vc.vms.get(result.vm_id).delete(disks=True)

    def first(word: str) -> float:
        return next((t - began for t, m in marks if word in m), float("nan"))

    importing, verifying = first("importing"), first("verifying")
    return {"total": total, "export": importing, "import": verifying - importing,
            "verify": total - verifying, "verified": result.verified,
            "methods": [d.method for d in result.disks],
            "copy_wire": at_verify[0] if at_verify else (0, 0)}


def by_hand(daemon: Any, volume: str, vc: Any, sim: Any, work: Path) -> dict[str, float]:
    """virsh vol-download | qemu-img convert | curl -T, each stage timed alone."""
    qcow2, raw = work / "hand.img", work / "hand.raw"
    download = timed(["virsh", "-c", daemon.uri, "vol-download", "--pool", "default", volume,
                      str(qcow2)])
    with open(qcow2, "rb") as handle:
        fmt = "qcow2" if handle.read(4) == b"QFI\xfb" else "raw"
    convert = timed(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(qcow2), str(raw)])
    driver = vc.driver
    datacenter = driver.inventory.datacenter().get("name", "")
    url = (f"https://127.0.0.1:{sim.port}/folder/hand/hand-flat.vmdk?dcPath={datacenter}"
           f"&dsName=LocalDS_0")
    upload = timed(["curl", "-sS", "-f", "--cacert", str(sim.ca_file), "-T", str(raw),
                    "-b", driver.session.cookie, url])
    qcow2.unlink()
    raw.unlink()
    return {"download": download, "convert": convert, "upload": upload,
            "total": download + convert + upload}


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
    from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
    from anyvirt_vsphere.testbed.vcsim import Vcsim

    import anyvirt
    from anyvirt.model import DiskSpec, VMSpec

    with tempfile.TemporaryDirectory(prefix="anyvirt-bench-") as tmp:
        daemon = LibvirtDaemon(name="bench-rss").start()
        try:
            with Vcsim(esx=True, vms=0, workdir=Path(tmp) / "vc") as sim:
                image = Path(tmp) / "disk.raw"
                make_image(image, size_mib * MIB)
                with anyvirt.connect(daemon.anyvirt_uri) as kvm:
                    kvm.vms.create(VMSpec(name="rss", cpus=1, memory_mib=16,
                                          disks=[DiskSpec(image=str(image))]))
                image.unlink()
                baseline = peak_rss_mib(reset=True)  # the setup's peak does not count
                anyvirt_move(daemon.anyvirt_uri, sim.anyvirt_uri_with_ca, sim.password, "rss")
                print(json.dumps({"size_mib": size_mib, "peak_rss_mib": peak_rss_mib(),
                                  "before_move_mib": baseline}))
        finally:
            daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-sizes", default="256,2048")
    parser.add_argument("--child-rss", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(args.child_rss)
        return

    from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
    from anyvirt_vsphere.testbed.vcsim import Vcsim

    import anyvirt
    from anyvirt.model import DiskSpec, VMSpec

    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="anyvirt-bench-") as tmp:
        work = Path(tmp)
        daemon = LibvirtDaemon(name="bench").start()
        try:
            with Vcsim(esx=True, vms=0, workdir=work / "vc") as sim:
                proxy = CountingProxy(sim.port)
                vc_uri = sim.anyvirt_uri_with_ca.replace(f":{sim.port}?", f":{proxy.port}?")
                image = work / "disk.raw"
                make_image(image, size)
                with anyvirt.connect(daemon.anyvirt_uri) as kvm:
                    vm = kvm.vms.create(VMSpec(name="bench", cpus=1, memory_mib=16,
                                               disks=[DiskSpec(image=str(image))]))
                    path = vm.info().disks[0].path
                    assert path is not None
                image.unlink()
                data = allocated(path)
                # timed straight to vcsim, like curl below; bytes counted on a second move
                # through the proxy (a Python relay costs CPU the timing must not pay)
                moved = anyvirt_move(daemon.anyvirt_uri, sim.anyvirt_uri_with_ca, sim.password,
                                     "bench")
                counted = anyvirt_move(daemon.anyvirt_uri, vc_uri, sim.password, "bench", proxy)
                wire = proxy.up + proxy.down
                with anyvirt.connect(sim.anyvirt_uri_with_ca, password=sim.password) as vc:
                    hand = by_hand(daemon, Path(path).name, vc, sim, work)
        finally:
            daemon.stop()
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
    copy_up, copy_down = counted["copy_wire"]
    copy_wire = copy_up + copy_down
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
