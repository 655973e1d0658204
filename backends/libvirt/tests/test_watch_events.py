"""``host.vms.watch()`` on a real libvirtd: domain events, a daemon restart mid-watch,
a burst of 1,000 changes, and ``vm.wait_for`` that never polls.

Changes are made through anyvirt and through libvirt's own tools (``virsh``, and
the libvirt API on a connection of the test's own), and each must arrive once.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from libvirt_support import destroy, guest_spec

import anyvirt
from anyvirt.host import Host
from anyvirt.model import PowerState
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.watch_changes import drain, next_change
from anyvirt.watch import VMChange


@pytest.fixture(scope="module")
def daemon() -> Iterator[LibvirtDaemon]:
    """A daemon of this module's own: one test kills and restarts it."""
    d = LibvirtDaemon(name="watch").start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def host(daemon: LibvirtDaemon) -> Iterator[Host]:
    with anyvirt.connect(daemon.anyvirt_uri) as h:
        yield h


def virsh(daemon: LibvirtDaemon, *args: str) -> str:
    return subprocess.run(["virsh", "-c", daemon.uri, *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def domain_xml(name: str, memory_kib: int = 16384, uuid: str = "") -> str:
    uuid_element = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (f"<domain type='qemu'><name>{name}</name>{uuid_element}"
            f"<memory unit='KiB'>{memory_kib}</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")


def test_watch_follows_virsh_and_anyvirt_within_a_second(
    daemon: LibvirtDaemon, host: Host, tmp_path: Path
) -> None:
    name = unique_name("w")
    xml = tmp_path / "d.xml"
    xml.write_text(domain_xml(name))
    with host.vms.watch() as watch:
        assert watch.pushed
        virsh(daemon, "define", str(xml))
        added, latency = next_change(watch)
        assert (added.kind, added.vm.name, latency < 1.0) == ("added", name, True)
        xml.write_text(domain_xml(name, memory_kib=8192, uuid=added.vm.id))
        virsh(daemon, "define", str(xml))  # what `virsh edit` does
        changed, latency = next_change(watch)
        assert (changed.kind, changed.fields, latency < 1.0) == ("changed", {"memory_mib"}, True)
        assert changed.old is not None and changed.old.memory_mib == 16
        assert changed.new is not None and changed.new.memory_mib == 8
        vm = host.vms.get(name)
        vm.reconfigure(cpus=2)
        changed, latency = next_change(watch)
        assert (changed.kind, changed.fields, latency < 1.0) == ("changed", {"cpus"}, True)
        virsh(daemon, "undefine", name)
        removed, latency = next_change(watch)
        assert (removed.kind, removed.vm.id, latency < 1.0) == ("removed", vm.id, True)
        assert drain(watch, 0.3) == []


def test_a_config_change_libvirt_announces_with_no_event_is_seen_at_the_next_resync(
    daemon: LibvirtDaemon, host: Host, tmp_path: Path
) -> None:
    """``virsh setmem --config`` on a stopped domain sends no event at all (libvirt 9.0):
    a watch with an ``interval`` relists that often and finds it."""
    name = unique_name("cfg")
    dom = host.native.defineXML(domain_xml(name))
    try:
        with host.vms.watch(interval=0.5) as watch:
            virsh(daemon, "setmem", name, "8M", "--config")
            changed, latency = next_change(watch, 3.0)
            assert (changed.kind, changed.vm.name, changed.fields) == ("changed", name, {"memory_mib"})
            assert latency < 1.5
    finally:
        dom.undefine()


def _qemu_pid(name: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"guest={name},".encode() in cmdline:
            return int(entry.name)
    raise AssertionError(f"no QEMU process for {name}")


def test_a_daemon_restarted_mid_watch_loses_and_doubles_nothing(
    daemon: LibvirtDaemon, host: Host, guest_image: Path
) -> None:
    runner = host.vms.create(guest_spec(unique_name("run"), guest_image))
    runner.start()
    gone = host.vms.get(host.native.defineXML(domain_xml(unique_name("gone"))).UUIDString())
    try:
        with host.vms.watch() as watch:
            daemon.kill()
            # while the daemon is down: its guest dies, so the relist must notice
            os.kill(_qemu_pid(runner.name), signal.SIGKILL)
            daemon.restart()
            conn = libvirt.open(daemon.uri)
            try:
                new = conn.defineXML(domain_xml(unique_name("new")))
                conn.lookupByUUIDString(gone.id).undefine()
                seen = drain(watch, 2.0)
                # and after the reconnect, events flow again
                conn.defineXML(domain_xml(new.name(), 8192, uuid=new.UUIDString()))
                seen += drain(watch, 1.0)
                new.undefine()
                seen += drain(watch, 1.0)
            finally:
                conn.close()
            assert watch.stats.lost >= 1
        got = sorted((c.kind, c.vm.name, tuple(sorted(c.fields))) for c in seen)
        assert got == sorted([
            ("changed", runner.name, ("state",)),
            ("added", new.name(), ()),
            ("removed", gone.name, ()),
            ("changed", new.name(), ("memory_mib",)),
            ("removed", new.name(), ()),
        ])
        stopped = next(c for c in seen if c.vm.name == runner.name)
        assert stopped.new is not None and stopped.new.state is not PowerState.RUNNING
    finally:
        destroy(host.vms.get(runner.id))


def test_a_burst_of_1000_changes_is_all_seen_in_flat_memory(
    daemon: LibvirtDaemon, host: Host
) -> None:
    conn = libvirt.open(daemon.uri)
    prefix = unique_name("burst")
    try:
        with host.vms.watch() as watch:
            seen: list[VMChange] = []
            reader = threading.Thread(target=lambda: seen.extend(iter(watch)))
            reader.start()

            def burst(round_: int) -> None:
                # each domain made and removed at once: most are gone before the watch
                # can read them, and must still be seen coming and going
                for i in range(500):
                    conn.defineXML(domain_xml(f"{prefix}-{round_}-{i}")).undefine()

            tracemalloc.start()
            try:
                burst(0)  # 1,000 changes
                deadline = time.monotonic() + 60
                while len(seen) < 1000 and time.monotonic() < deadline:
                    time.sleep(0.05)
                gc.collect()
                first, _ = tracemalloc.get_traced_memory()
                burst(1)
                while len(seen) < 2000 and time.monotonic() < deadline + 60:
                    time.sleep(0.05)
                gc.collect()
                second, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            watch.close()
            reader.join(10)
    finally:
        conn.close()
    kinds = [c.kind for c in seen]
    assert len(seen) == 2000, f"{len(seen)} changes seen"
    assert kinds.count("added") == kinds.count("removed") == 1000
    assert len({(c.kind, c.vm.id) for c in seen}) == 2000  # none doubled
    assert second - first < 1000 * 2048  # the watch keeps nothing per change passed on


def test_wait_for_a_state_set_by_virsh_sends_nothing_while_waiting(
    daemon: LibvirtDaemon, host: Host, guest_image: Path
) -> None:
    vm = host.vms.create(guest_spec(unique_name("wait"), guest_image))
    try:
        calls = 0
        for name in ("list_vms", "vm_summary", "find_vm"):
            real = getattr(host.driver, name)

            def counted(*args: object, _real: object = real) -> object:
                nonlocal calls
                calls += 1
                return _real(*args)  # type: ignore[operator]

            setattr(host.driver, name, counted)
        timer = threading.Timer(0.5, lambda: virsh(daemon, "start", vm.name))
        timer.start()
        started = time.monotonic()
        vm.wait_for(PowerState.RUNNING, timeout=30)
        took = time.monotonic() - started
        timer.join()
        assert vm.state is PowerState.RUNNING
        assert 0.4 < took < 5
        assert calls == 0  # the host's own connection was never asked
    finally:
        destroy(vm)
