"""The listing on a real libvirtd: what each row says, and how many calls it costs.

A daemon of its own (no other test's domains in the count), with disk-less
QEMU domains (they run in the firmware, which is all a state needs): shut
off, running, managed-saved and a template.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon

import anyvirt
from anyvirt.host import Host
from anyvirt.model import PowerState
from anyvirt.vm import VM

#: answered by the client library itself, no call to the daemon
LOCAL = {"name", "UUIDString", "UUID", "isAlive", "ID"}


@pytest.fixture(scope="module")
def daemon() -> Iterator[LibvirtDaemon]:
    daemon = LibvirtDaemon(name="listing").start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def conn(daemon: LibvirtDaemon) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(daemon.uri)
    try:
        yield conn
    finally:
        for dom in conn.listAllDomains(0):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        conn.close()


def define(conn: libvirt.virConnect, name: str, cpus: int = 1, memory_mib: int = 32) -> libvirt.virDomain:
    return conn.defineXML(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>{memory_mib}</memory>"
        f"<vcpu>{cpus}</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"
    )


class Counting:
    """The host's libvirt connection, counting the calls that go to the daemon."""

    def __init__(self, target: libvirt.virConnect, counts: Counter[str]) -> None:
        self._target = target
        self._counts = counts
        #: which threads made each call
        self.threads: dict[str, set[int]] = {}

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value) or attr in LOCAL:
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self._counts[attr] += 1
            self.threads.setdefault(attr, set()).add(threading.get_ident())
            return value(*args, **kwargs)

        return call


def calls_of_a_listing(host: Host, threads: dict[str, set[int]] | None = None) -> Counter[str]:
    """The daemon calls of one ``host.vms.list()`` (``threads``: filled with who made them)."""
    link = host.driver.link  # type: ignore[attr-defined]
    real = link.conn
    counts: Counter[str] = Counter()
    link._conn = counting = Counting(real, counts)
    try:
        host.vms.list()
    finally:
        link._conn = real
    if threads is not None:
        threads.update(counting.threads)
    return counts


def row(vm: VM) -> tuple[object, ...]:
    return (vm.id, vm.name, vm.state, vm.raw_state, vm.cpus, vm.memory_mib, vm.node, vm.template)


def test_each_row_says_what_the_vm_itself_says(daemon: LibvirtDaemon, conn: libvirt.virConnect) -> None:
    define(conn, "off", cpus=2, memory_mib=48)
    define(conn, "on").create()
    saved = define(conn, "saved")
    saved.create()
    saved.managedSave(0)
    define(conn, "tmpl", cpus=3)
    with anyvirt.connect(daemon.anyvirt_uri) as host:
        host.vms.get("tmpl").mark_template()
        listed = {vm.name: row(vm) for vm in host.vms.list()}
        assert listed == {vm.name: row(vm.refresh()) for vm in host.vms.list()}
        # this one asked for the managed saves alongside the stats (the last met shut-off ones)
        assert {vm.name: row(vm) for vm in host.vms.list()} == listed
    assert {name: r[2] for name, r in listed.items()} == {
        "off": PowerState.STOPPED, "on": PowerState.RUNNING,
        "saved": PowerState.SUSPENDED, "tmpl": PowerState.STOPPED,
    }
    assert listed["off"][4:6] == (2, 48)
    assert listed["tmpl"][7] is True and listed["off"][7] is False


def test_a_listing_is_one_call_and_a_second_only_for_shut_off_domains(
    daemon: LibvirtDaemon, conn: libvirt.virConnect
) -> None:
    for index in range(3):
        define(conn, f"run-{index}").create()
    with anyvirt.connect(daemon.anyvirt_uri) as host:
        # none shut off: none can have a managed save image, so nothing asks which do
        assert calls_of_a_listing(host) == {"getAllDomainStats": 1}
        define(conn, "stopped")
        assert calls_of_a_listing(host) == {"getAllDomainStats": 1, "listAllDomains": 1}
        assert len(host.vms.list()) == 4


def test_after_a_listing_with_shut_off_domains_the_managed_saves_are_asked_alongside(
    daemon: LibvirtDaemon, conn: libvirt.virConnect
) -> None:
    define(conn, "stopped")
    with anyvirt.connect(daemon.anyvirt_uri) as host:
        threads: dict[str, set[int]] = {}
        assert calls_of_a_listing(host, threads) == {"getAllDomainStats": 1, "listAllDomains": 1}
        assert threads["listAllDomains"] == threads["getAllDomainStats"]  # nothing known yet: after
        threads.clear()
        assert calls_of_a_listing(host, threads) == {"getAllDomainStats": 1, "listAllDomains": 1}
        # the second call ran on a thread of its own, while the stats call was under way
        assert threads["listAllDomains"].isdisjoint(threads["getAllDomainStats"])
