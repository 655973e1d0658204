"""Watching at the cost of changes: round trips and bytes per change at two fleet sizes,
idle cost, and latency from a change made with the platform's own tool to the event.

Standalone (no pytest)::

    .venv/bin/python bench/watch_bench.py [--sizes 1000,10000] [--backends libvirt,vsphere,proxmox]
                                          [--changes 100] [--idle 10]

Each backend's watch talks to its testbed through a loopback proxy of this
benchmark that counts every byte both ways and every request the watch sends
(libvirt: RPC calls, parsed from the wire, keepalives apart; vSphere: SOAP
POSTs, over plain HTTP so they can be read; Proxmox: HTTP requests, counted in
``requests``). Changes are made beside the proxy, on a connection of the
benchmark's own, as another tool would: libvirt's API and ``virsh``, plain
pyVmomi, plain HTTP to the PVE API.

- libvirt: an isolated libvirtd with N defined QEMU domains;
- vSphere: vcsim with N VMs (2 clusters' root pools, plain HTTP);
- Proxmox: fakepve with N guests, the watch polling every ``--interval`` s.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyvirt
from anyvirt.host import Host
from anyvirt.watch import Watch

# ---------------------------------------------------------------- the counting proxy


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0  # bytes client -> server
        self.received = 0  # bytes server -> client
        self.requests = 0  # requests the client sent (RPC calls, HTTP requests)
        self.keepalives = 0

    def snapshot(self) -> tuple[int, int, int, int]:
        with self.lock:
            return self.sent, self.received, self.requests, self.keepalives


class LibvirtCalls:
    """Counts RPC CALL packets in a libvirt client's stream (keepalives apart)."""

    KEEPALIVE = 0x6B656570

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buffer = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 28:
            length, prog, _vers, _proc, kind = struct.unpack(">IIIII", self.buffer[:20])
            if len(self.buffer) < length:
                return
            self.buffer = self.buffer[length:]
            with self.counters.lock:
                if prog == self.KEEPALIVE:
                    self.counters.keepalives += 1
                elif kind == 0:  # CALL
                    self.counters.requests += 1


class HttpRequests:
    """Counts SOAP requests in a plain-HTTP client's stream."""

    PATTERN = b"POST /sdk"

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.tail = b""  # shorter than the pattern: a match is never counted twice

    def feed(self, data: bytes) -> None:
        text = self.tail + data
        found = text.count(self.PATTERN)
        self.tail = text[-(len(self.PATTERN) - 1):]
        if found:
            with self.counters.lock:
                self.counters.requests += found


class Proxy:
    """A loopback proxy (TCP or UNIX socket) that counts what passes."""

    def __init__(self, upstream: Callable[[], socket.socket], listen: socket.socket,
                 parser: Callable[[Counters], Any] | None) -> None:
        self.counters = Counters()
        self.upstream = upstream
        self.listen = listen
        self.parser = parser
        self.listen.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listen.accept()
            except OSError:
                return
            try:
                server = self.upstream()
            except OSError:  # the testbed is gone (a client reconnecting at shutdown)
                client.close()
                continue
            parser = self.parser(self.counters) if self.parser else None
            threading.Thread(target=self._pump, args=(client, server, True, parser), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool, parser: Any) -> None:
        try:
            while data := src.recv(65536):
                with self.counters.lock:
                    if outbound:
                        self.counters.sent += len(data)
                    else:
                        self.counters.received += len(data)
                if parser is not None:
                    parser.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listen.close()


def tcp_proxy(host: str, port: int, parser: Callable[[Counters], Any] | None) -> tuple[Proxy, int]:
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    proxy = Proxy(lambda: socket.create_connection((host, port)), listen, parser)
    return proxy, listen.getsockname()[1]


def unix_proxy(path: str, at: str, parser: Callable[[Counters], Any] | None) -> Proxy:
    listen = socket.socket(socket.AF_UNIX)
    listen.bind(at)

    def upstream() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        return s

    return Proxy(upstream, listen, parser)


# ---------------------------------------------------------------- measuring


def wait_changes(watch: Watch, count: int, timeout: float) -> int:
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < count and time.monotonic() < deadline:
        if watch.get(timeout=max(0.0, deadline - time.monotonic())) is not None:
            seen += 1
    return seen


def measure(name: str, size: int, host: Host, proxy: Proxy, make_changes: Callable[[], int],
            idle: float, tool_change: Callable[[], None], samples: int,
            interval: float | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    watch = host.vms.watch(interval=interval)
    first = time.perf_counter() - started
    base = proxy.counters.snapshot()
    time.sleep(idle)
    after_idle = proxy.counters.snapshot()
    expected = make_changes()
    seen = wait_changes(watch, expected, 120)
    time.sleep(interval or 0.0)  # the poll after the last change, for the pollers
    after = proxy.counters.snapshot()
    latencies = []
    for _ in range(samples):
        began = time.perf_counter()
        tool_change()
        change = watch.get(timeout=30)
        if change is not None:
            latencies.append(time.perf_counter() - began)
    watch.close()
    sent = after[0] - after_idle[0]
    received = after[1] - after_idle[1]
    requests = after[2] - after_idle[2]
    return {
        "backend": name, "size": size, "first_listing_s": first, "changes": expected, "seen": seen,
        "requests_per_change": requests / max(seen, 1),
        "bytes_per_change": (sent + received) / max(seen, 1),
        "idle_requests": after_idle[2] - base[2], "idle_keepalives": after_idle[3] - base[3],
        "idle_bytes": after_idle[0] + after_idle[1] - base[0] - base[1], "idle_s": idle,
        "latency_median_s": statistics.median(latencies) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
    }


# ---------------------------------------------------------------- libvirt


def domain_xml(name: str, memory_kib: int = 16384, uuid: str = "") -> str:
    uuid_element = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (f"<domain type='qemu'><name>{name}</name>{uuid_element}"
            f"<memory unit='KiB'>{memory_kib}</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os></domain>")


@contextlib.contextmanager
def libvirt_fleet(size: int) -> Iterator[tuple[Any, Proxy, str, Any]]:
    import libvirt
    from anyvirt_libvirt.testbed.daemon import LibvirtDaemon

    daemon = LibvirtDaemon(name="wbench").start()
    proxy_dir = Path(tempfile.mkdtemp(prefix="wb-"))
    try:
        conn = libvirt.open(daemon.uri)
        print(f"libvirt: defining {size} domains ...", flush=True)
        for i in range(size):
            conn.defineXML(domain_xml(f"fleet-{i}"))
        proxy = unix_proxy(str(daemon.socket_path), str(proxy_dir / "sock"), LibvirtCalls)
        uri = f"libvirt+qemu+unix:///system?socket={proxy_dir / 'sock'}"
        try:
            yield daemon, proxy, uri, conn
        finally:
            proxy.close()
            conn.close()
    finally:
        daemon.stop()
        shutil.rmtree(proxy_dir, ignore_errors=True)


def bench_libvirt(size: int, changes: int, idle: float, samples: int) -> dict[str, Any]:
    with libvirt_fleet(size) as (daemon, proxy, uri, conn), anyvirt.connect(uri) as host:
        def make_changes() -> int:  # defines, then (once read) undefines: added, removed
            doms = [conn.defineXML(domain_xml(f"burst-{i}")) for i in range(changes // 2)]
            time.sleep(1.0)
            for dom in doms:
                dom.undefine()
            return 2 * len(doms)

        counter = iter(range(10**6))

        def virsh_change() -> None:
            with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
                f.write(domain_xml(f"virsh-{next(counter)}"))
                f.flush()
                subprocess.run(["virsh", "-c", daemon.uri, "define", f.name], check=True,
                               capture_output=True)

        return measure("libvirt", size, host, proxy, make_changes, idle, virsh_change, samples)


# ---------------------------------------------------------------- vSphere


def bench_vsphere(size: int, changes: int, idle: float, samples: int) -> dict[str, Any]:
    import pyVim.connect
    import pyVim.task
    from anyvirt_vsphere.testbed.vcsim import Vcsim
    from pyVmomi import vim

    connect: Any = pyVim.connect  # untyped SDK helpers
    wait_for_task: Any = pyVim.task.WaitForTask

    shm = Path("/dev/shm")
    workdir = Path(tempfile.mkdtemp(prefix="anyvirt-wbench-", dir=shm if shm.is_dir() else None))
    sim = Vcsim(clusters=2, hosts=4, standalone_hosts=0, pools=0, vms=size // 2, tls=False,
                workdir=workdir)
    print(f"vSphere: starting vcsim with {size} VMs ...", flush=True)
    sim.start(timeout=900)
    try:
        proxy, port = tcp_proxy(sim.host, sim.port, HttpRequests)
        uri = f"vsphere+http://{sim.username}@127.0.0.1:{port}"
        tool = connect.SmartConnect(protocol="http", host=sim.host, port=sim.port, user=sim.username,
                            pwd=sim.password)
        content = tool.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        vms = list(view.view)[: max(changes // 2, samples)]
        try:
            with anyvirt.connect(uri, password=sim.password) as host:
                def make_changes() -> int:  # power off, then on again (apart: the
                    for vm in vms[: changes // 2]:  # server merges one VM's updates in a batch)
                        wait_for_task(vm.PowerOffVM_Task())
                    time.sleep(0.5)
                    for vm in vms[: changes // 2]:
                        wait_for_task(vm.PowerOnVM_Task())
                    return 2 * (changes // 2)

                flips = iter(range(10**6))

                def pyvmomi_change() -> None:
                    vm = vms[next(flips) % len(vms)]
                    wait_for_task(vm.Rename_Task(f"renamed-{time.monotonic_ns()}"))

                return measure("vsphere", size, host, proxy, make_changes, idle, pyvmomi_change,
                               samples)
        finally:
            connect.Disconnect(tool)
            proxy.close()
    finally:
        sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- Proxmox


def bench_proxmox(size: int, changes: int, idle: float, samples: int,
                  interval: float) -> dict[str, Any]:
    import requests
    from anyvirt_proxmox.testbed import FakePveTestbed
    from anyvirt_proxmox.testbed.fakepve import FIRST_GUEST_ID

    print(f"Proxmox: starting fakepve with {size} guests ...", flush=True)
    with FakePveTestbed(nodes=3, guests=size) as bed:
        proxy, port = tcp_proxy("127.0.0.1", bed.port, None)
        real_send = requests.adapters.HTTPAdapter.send

        def counted(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if f":{port}/" in str(request.url):
                with proxy.counters.lock:
                    proxy.counters.requests += 1
            return real_send(adapter, request, *args, **kwargs)

        requests.adapters.HTTPAdapter.send = counted  # type: ignore[method-assign,assignment]
        api = requests.Session()
        base = f"https://127.0.0.1:{bed.port}/api2/json"
        ticket = api.post(f"{base}/access/ticket", verify=str(bed.cafile),
                          data={"username": "root@pam", "password": bed.password}).json()["data"]
        api.cookies.set("PVEAuthCookie", ticket["ticket"])
        api.headers["CSRFPreventionToken"] = ticket["CSRFPreventionToken"]

        def status(i: int, action: str) -> None:
            vmid = FIRST_GUEST_ID + i
            api.post(f"{base}/nodes/pve{i % 3 + 1}/qemu/{vmid}/status/{action}",
                     verify=str(bed.cafile)).raise_for_status()

        # guests 1, 2, 4, 5, ... are stopped (every third one runs)
        stopped = [i for i in range(size) if i % 3][: max(changes // 2, samples)]
        try:
            uri = bed.uri.replace(f":{bed.port}?", f":{port}?")
            with anyvirt.connect(uri, password=bed.password) as host:
                def make_changes() -> int:  # a poll between starts and stops, else they cancel
                    for i in stopped[: changes // 2]:
                        status(i, "start")
                    time.sleep(1.5 * interval)
                    for i in stopped[: changes // 2]:
                        status(i, "stop")
                    return 2 * (changes // 2)

                flips = iter(range(10**6))

                def http_change() -> None:
                    n = next(flips)
                    status(stopped[n // 2 % len(stopped)], "start" if n % 2 == 0 else "stop")

                return measure("proxmox", size, host, proxy, make_changes, idle, http_change,
                               samples, interval=interval)
        finally:
            requests.adapters.HTTPAdapter.send = real_send  # type: ignore[method-assign]
            proxy.close()


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--backends", default="libvirt,vsphere,proxmox")
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=10, help="latency samples")
    parser.add_argument("--interval", type=float, default=2.0, help="Proxmox poll interval")
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            if backend == "libvirt":
                row = bench_libvirt(size, args.changes, args.idle, args.samples)
            elif backend == "vsphere":
                row = bench_vsphere(size, args.changes, args.idle, args.samples)
            else:
                row = bench_proxmox(size, args.changes, args.idle, args.samples, args.interval)
            print(row, flush=True)
            rows.append(row)
    print()
    print("| backend | VMs | first listing s | changes seen | requests / change | bytes / change "
          "| idle requests (keepalives) in s | idle bytes | latency median / max s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        lat = (f"{r['latency_median_s']:.3f} / {r['latency_max_s']:.3f}"
               if r["latency_median_s"] is not None else "-")
        print(f"| {r['backend']} | {r['size']:,} | {r['first_listing_s']:.2f} | "
              f"{r['seen']}/{r['changes']} | {r['requests_per_change']:.2f} | "
              f"{r['bytes_per_change']:,.0f} | {r['idle_requests']} ({r['idle_keepalives']}) in "
              f"{r['idle_s']:g} | {r['idle_bytes']:,} | {lat} |")
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["backend"], []).append(r)
    for backend, pair in by.items():
        if len(pair) >= 2:
            small, big = pair[0], pair[-1]
            print(f"{backend}: {big['size']:,} vs {small['size']:,} VMs: requests/change "
                  f"{big['requests_per_change'] / max(small['requests_per_change'], 1e-9):.2f}x, "
                  f"bytes/change {big['bytes_per_change'] / max(small['bytes_per_change'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
