"""The real Linux test guest on an isolated network: each clone is its own machine.

Three domains are made the way clones are (qcow2 overlays on one base disk),
each with its own NoCloud seed; booted under TCG in a daemon whose network
namespace is its own, each must print its own hostname and SSH key on its
console and get its own DHCP lease, which :func:`domain_addresses` must find.
Seeds are written with ``xorriso`` here (Debian's tool, independent of
anyvirt's own seed writer).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import time
import uuid
from pathlib import Path

import libvirt
import pytest
from anyvirt_libvirt.addresses import domain_addresses, nic_macs
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from anyvirt_libvirt.testbed.linux_guest import (
    LinuxGuest,
    console_facts,
    domain_xml,
    wait_for_console,
)
from anyvirt_libvirt.testbed.network import IsolatedNetwork
from libvirt_support import nocloud_seed

from anyvirt.addresses import GuestAddress

CLONES = 3
BOOT_TIMEOUT = 90.0  # a bound, not the expected time: three TCG guests on a shared 2-core machine


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def conn(libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork]) -> libvirt.virConnect:
    daemon, _ = libvirt_isolated_daemon
    connection = daemon.open()
    yield connection
    connection.close()


def test_clones_boot_with_their_own_hostname_key_and_leased_address(
    conn: libvirt.virConnect,
    libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork],
    linux_guest: LinuxGuest,
    tmp_path: Path,
) -> None:
    _, network = libvirt_isolated_daemon
    base = tmp_path / "base.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", str(base), "16M")
    run = uuid.uuid4().hex[:6]
    clones = []
    started = time.monotonic()
    try:
        for index in range(1, CLONES + 1):
            name = f"web-{run}-{index}"
            disk = tmp_path / f"{name}.qcow2"
            _qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(disk))
            key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{index}{run} ops@{name}"
            console = tmp_path / f"{name}.console"
            xml = domain_xml(name, linux_guest, console=console, disk=disk,
                             seed=nocloud_seed(tmp_path, name, "ops", key), network=network.name)
            dom = conn.defineXML(xml)
            clones.append((name, key, console, dom))
            dom.create()
        facts = {
            name: wait_for_console(console, lambda f: f.init_done and bool(f.addresses), BOOT_TIMEOUT)
            for name, _, console, _ in clones
        }
        booted = time.monotonic() - started

        for name, key, _, dom in clones:
            seen = facts[name]
            assert seen.hostname == name
            assert seen.instance_id == f"iid-{name}"
            assert seen.ssh_keys == (("ops", key),)
            (mac,) = nic_macs(dom)
            (line,) = seen.addresses
            assert line.mac == mac
            applied = ipaddress.ip_interface(line.address)
            assert applied.network == network.subnet
            addresses = domain_addresses(dom)
            assert addresses == [GuestAddress(mac, applied.ip, 24, "lease")], addresses
        leased = [domain_addresses(dom)[0].ip for *_, dom in clones]
        assert len(set(leased)) == CLONES
        print(f"\n{CLONES} guests booted to DHCP in {booted:.1f}s (TCG)")
    finally:
        for *_, dom in clones:
            if dom.isActive():
                dom.destroy()
            dom.undefine()


def test_guest_without_seed_says_so_and_powers_off_on_the_power_button(
    conn: libvirt.virConnect, linux_guest: LinuxGuest, tmp_path: Path,
) -> None:
    console = tmp_path / "console"
    dom = conn.defineXML(domain_xml(f"noseed-{uuid.uuid4().hex[:6]}", linux_guest, console=console))
    try:
        dom.create()
        facts = wait_for_console(console, lambda f: f.init_done, BOOT_TIMEOUT)
        assert facts.hostname is None and facts.ssh_keys == ()
        assert "ANYVIRT-GUEST seed=none" in console.read_text(errors="replace")
        assert domain_addresses(dom) == []  # no NIC, nothing to report
        # acpid starts just before init-done and needs a moment to open the input device:
        # a press before that is lost, as on real hardware, so press again until it is heard
        deadline = time.monotonic() + 30
        while dom.isActive() and time.monotonic() < deadline:
            with contextlib.suppress(libvirt.libvirtError):  # it may power off meanwhile
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            time.sleep(1)
        assert not dom.isActive()
        assert "ANYVIRT-GUEST power-button" in console.read_text(errors="replace")
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def _net_namespace(pid: int | str) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_the_isolated_network_lives_only_in_the_daemons_namespace(
    libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork],
) -> None:
    daemon, network = libvirt_isolated_daemon
    assert daemon.pid is not None
    inside = subprocess.run(daemon.netns_command(["ip", "-o", "addr", "show", network.bridge]),
                            capture_output=True, text=True, check=True).stdout
    assert f"inet {network.gateway}/{network.subnet.prefixlen}" in inside
    # the machine's own namespace has no such bridge, and no address in the guests' subnet
    assert _net_namespace("self") != _net_namespace(daemon.pid)
    assert not Path(f"/sys/class/net/{network.bridge}").exists()
    outside = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert network.bridge not in outside
    assert str(network.gateway) not in outside
    # the network's DHCP server runs in the daemon's namespace
    dnsmasq = [pid for pid in os.listdir("/proc") if pid.isdigit()
               and _cmdline(pid).startswith("/usr/sbin/dnsmasq")
               and f"/{network.name}.conf" in _cmdline(pid)]
    # (other isolated daemons of the same session run a network of the same name, each in
    # a namespace of its own: none of them may serve DHCP in the machine's namespace)
    assert [pid for pid in dnsmasq if _net_namespace(pid) == _net_namespace(daemon.pid)]
    assert [pid for pid in dnsmasq if _net_namespace(pid) == _net_namespace("self")] == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_the_default_daemon_keeps_the_machines_network_namespace(libvirt_daemon: LibvirtDaemon) -> None:
    assert libvirt_daemon.pid is not None and libvirt_daemon.netns_path is None
    assert _net_namespace(libvirt_daemon.pid) == _net_namespace("self")


def test_console_facts_read_only_complete_marker_lines() -> None:
    text = ("noise\nANYVIRT-GUEST hostname=web-1\r\nANYVIRT-GUEST address=192.168.200.5/24 "
            "mac=52:54:00:00:00:01 nic=eth0 uptime=3.2\nANYVIRT-GUEST init-do")
    facts = console_facts(text)
    assert facts.hostname == "web-1"
    assert [a.address for a in facts.addresses] == ["192.168.200.5/24"]
    assert not facts.init_done
