"""What the move benches share: the testbed (a libvirtd with one VM, a vcsim), the disk
image, byte-counting relays, one timed verified move, and the by-hand pipeline.

Used by ``bench/move_bench.py`` and ``bench/move_stream_bench.py``; not a bench itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

MIB = 1024 * 1024
REMOTE_POOL = "/var/lib/libvirt/images"  # inside the daemon's namespace only


class CountingProxy:
    """Relays a TCP port and counts bytes each way (TLS passes through untouched)."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.up = self.down = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def total(self) -> int:
        return self.up + self.down

    def _connect(self) -> socket.socket:
        return socket.create_connection(self.upstream)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = self._connect()
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


class UnixCountingProxy(CountingProxy):
    """:class:`CountingProxy` for a UNIX socket (a libvirt daemon's), listening at ``path``."""

    def __init__(self, upstream_path: str) -> None:
        self.upstream_path = upstream_path
        self.up = self.down = 0
        self._dir = tempfile.mkdtemp(prefix="bench-relay-")
        self.path = os.path.join(self._dir, "sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(16)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self) -> socket.socket:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.upstream_path)
        return upstream


def make_image(path: Path, size: int) -> None:
    """A raw image of ``size`` bytes: the first half random, the rest a hole."""
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


class Testbed(NamedTuple):
    daemon: Any  # anyvirt_libvirt.testbed.daemon.LibvirtDaemon
    sim: Any  # anyvirt_vsphere.testbed.vcsim.Vcsim
    vm_name: str
    path: str  # the VM's disk, as the daemon names it
    data: int  # the bytes of data its image holds (:func:`allocated`)


@contextlib.contextmanager
def move_testbed(work: Path, size: int, *, name: str = "bench", vm_name: str = "bench",
                 remote: bool = False) -> Iterator[Testbed]:
    """A libvirtd (with ``remote``, its pool in a directory only its own mount namespace
    sees) holding a stopped VM ``vm_name`` whose disk is :func:`make_image`'s, and a vcsim
    in ESXi mode; both stopped after."""
    from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
    from anyvirt_vsphere.testbed.vcsim import Vcsim

    import anyvirt
    from anyvirt.model import DiskSpec, VMSpec

    daemon = LibvirtDaemon(name=name).start()
    try:
        if remote:
            make_pool_remote(daemon.uri)
        with Vcsim(esx=True, vms=0, workdir=work / "vc") as sim:
            image = work / "disk.raw"
            make_image(image, size)
            data = allocated(str(image))
            with anyvirt.connect(daemon.anyvirt_uri) as kvm:
                vm = kvm.vms.create(VMSpec(name=vm_name, cpus=1, memory_mib=16,
                                           disks=[DiskSpec(image=str(image))]))
                path = vm.info().disks[0].path
                assert path is not None
            image.unlink()
            yield Testbed(daemon, sim, vm_name, path, data)
    finally:
        daemon.stop()


def timed_move(kvm_uri: str, vc_uri: str, password: str, vm_name: str,
               counters: Sequence[CountingProxy] = ()) -> dict[str, Any]:
    """One verified ``anyvirt.migrate`` to vcsim (the copy deleted after), timed by phase from
    its progress messages: ``importing`` and ``verifying`` are the seconds from the start at
    which each began; ``at_verify`` the bytes each of ``counters`` had carried then."""
    import anyvirt

    marks: list[tuple[float, str]] = []
    at_verify: list[tuple[int, ...]] = []

    def seen(task: Any) -> None:
        message = task.message or ""
        if "verifying" in message and not at_verify:
            at_verify.append(tuple(c.total for c in counters))
        marks.append((time.monotonic(), message))

    with anyvirt.connect(kvm_uri) as kvm, anyvirt.connect(vc_uri, password=password) as vc:
        vm = kvm.vms.get(vm_name)
        began = time.monotonic()
        result = anyvirt.migrate(vm, to=vc, name=f"{vm_name}-moved", on_progress=seen)
        total = time.monotonic() - began
        vc.vms.get(result.vm_id).delete(disks=True)

    def first(word: str) -> float:
        return next((t - began for t, m in marks if word in m), float("nan"))

    return {"total": total, "importing": first("importing"), "verifying": first("verifying"),
            "verified": result.verified, "methods": [d.method for d in result.disks],
            "at_verify": at_verify[0] if at_verify else tuple(0 for _ in counters)}


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
