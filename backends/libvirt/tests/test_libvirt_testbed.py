"""The libvirt testbed and the tiny guest, proven against real libvirtd + QEMU."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from anyvirt_libvirt.demo_image import (
    MARKER,
    OFF_MARKER,
    DemoImageError,
    build_image,
    disk_counter,
    last_counter,
    read_console,
    wait_for_counter,
    wait_for_marker,
    write_image,
)
from anyvirt_libvirt.testbed.daemon import (
    LibvirtDaemon,
    LibvirtTestbedError,
    kvm_usable,
    make_test_driver_file,
    uri_for_test_driver_file,
)

# Fixtures libvirt_daemon, libvirt_daemon_pair and guest_image come from
# anyvirt_libvirt.testbed.fixtures, through this directory's conftest.py.


def guest_domain_xml(
    name: str,
    disk: Path,
    console: Path,
    disk_format: str = "raw",
    console_kind: str = "file",
    accel: str | None = None,
) -> str:
    """Plain libvirt XML for the test guest: KVM when usable (or ``accel``), else TCG.

    ``console_kind`` "file" is ``<serial type='file'>``; "pty-log" is a pty whose
    output QEMU also logs to the file (``<log file=...>``). Both work with
    ``stdio_handler = "file"`` and no virtlogd. Both append: without
    ``append='on'`` a migration destination truncates the console file.
    """
    dom = ET.Element("domain", type=accel or ("kvm" if kvm_usable() else "qemu"))
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = "16"
    ET.SubElement(dom, "vcpu").text = "1"
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "boot", dev="hd")
    ET.SubElement(ET.SubElement(dom, "features"), "acpi")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    devices = ET.SubElement(dom, "devices")
    disk_el = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk_el, "driver", name="qemu", type=disk_format)
    ET.SubElement(disk_el, "source", file=str(disk))
    ET.SubElement(disk_el, "target", dev="vda", bus="virtio")
    if console_kind == "file":
        serial = ET.SubElement(devices, "serial", type="file")
        ET.SubElement(serial, "source", path=str(console), append="on")
    else:
        serial = ET.SubElement(devices, "serial", type="pty")
        ET.SubElement(serial, "log", file=str(console), append="on")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


@contextlib.contextmanager
def connection(daemon: LibvirtDaemon) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(daemon.uri)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def defined_guest(
    conn: libvirt.virConnect, tmp_path: Path, template: Path, name: str, disk_format: str = "raw"
) -> Iterator[tuple[libvirt.virDomain, Path, Path]]:
    """Define the guest on its own disk copy; destroy and undefine it afterwards."""
    disk = write_image(tmp_path / f"{name}.{disk_format}", disk_format, template=template)
    console = tmp_path / f"{name}.console"
    dom = conn.defineXML(guest_domain_xml(name, disk, console, disk_format))
    try:
        yield dom, disk, console
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def wait_for_state(dom: libvirt.virDomain, state: int, timeout: float) -> float:
    start = time.monotonic()
    while dom.state()[0] != state:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"domain state {dom.state()} never became {state}")
        time.sleep(0.05)
    return time.monotonic() - start


def test_kvm_usable_matches_device_access() -> None:
    assert kvm_usable() == (os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK))


def test_guest_image_is_a_cached_boot_sector(tmp_path: Path) -> None:
    image = build_image(tmp_path)
    data = image.read_bytes()
    assert len(data) == 1024 * 1024
    assert data[510:512] == b"\x55\xaa"
    assert MARKER.encode() in data[:512]
    assert disk_counter(image) is None  # the guest has not written yet
    mtime = image.stat().st_mtime_ns
    assert build_image(tmp_path) == image
    assert image.stat().st_mtime_ns == mtime


def test_guest_build_names_the_missing_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no GNU as/ld reachable
    with pytest.raises(DemoImageError, match="binutils"):
        build_image(tmp_path / "fresh")


def test_daemon_refuses_a_workdir_too_long_for_its_socket(tmp_path: Path) -> None:
    with pytest.raises(LibvirtTestbedError, match="too long"):
        LibvirtDaemon(tmp_path / ("x" * 120))


def test_console_helpers_tolerate_partial_output(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    assert read_console(console) == ""
    assert last_counter(console) is None
    console.write_bytes(b"\r\nANYVIRT-GUEST-UP\r\nCOUNT 0\r\nCOUNT 1\r\nCOUNT 1")
    assert last_counter(console) == 1  # the half-written "COUNT 1..." is not trusted
    wait_for_marker(console, timeout=0.1)
    assert wait_for_counter(console, 1, timeout=0.1) == 1
    with pytest.raises(TimeoutError):
        wait_for_counter(console, 5, timeout=0.2)
    with pytest.raises(TimeoutError):
        wait_for_marker(console, timeout=0.2, marker=OFF_MARKER)


def test_guest_boots_counts_and_powers_off_on_acpi_button(
    libvirt_daemon: LibvirtDaemon, guest_image: Path, tmp_path: Path
) -> None:
    with connection(libvirt_daemon) as conn, defined_guest(
        conn, tmp_path, guest_image, "acpi-guest", disk_format="qcow2"
    ) as (dom, disk, console):
        dom.create()
        wait_for_marker(console, timeout=30)
        assert wait_for_counter(console, 2, timeout=15) >= 2
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        took = wait_for_state(dom, libvirt.VIR_DOMAIN_SHUTOFF, timeout=10)
        assert took < 10
        assert OFF_MARKER in read_console(console)
        counted = disk_counter(disk)
        assert counted is not None
        assert counted >= 2


def test_daemons_side_by_side_are_isolated(
    libvirt_daemon_pair: tuple[LibvirtDaemon, LibvirtDaemon], guest_image: Path, tmp_path: Path
) -> None:
    first, second = libvirt_daemon_pair
    assert first.host_uuid != second.host_uuid
    assert first.migration_ports != second.migration_ports
    with connection(first) as conn_a, connection(second) as conn_b:
        for conn, daemon in ((conn_a, first), (conn_b, second)):
            host_uuid = ET.fromstring(conn.getCapabilities()).findtext("host/uuid")
            assert host_uuid == daemon.host_uuid
            assert [p.name() for p in conn.listAllStoragePools(0)] == ["default"]
        with defined_guest(conn_a, tmp_path, guest_image, "only-on-a"):
            assert [d.name() for d in conn_a.listAllDomains(0)] == ["only-on-a"]
            assert conn_b.listAllDomains(0) == []
        pool_a = conn_a.storagePoolLookupByName("default")
        assert pool_a.isActive()
        assert pool_a.autostart()
        assert ET.fromstring(pool_a.XMLDesc(0)).findtext("target/path") == str(first.pool_path)


def test_pair_live_migrates_a_running_guest(
    libvirt_daemon_pair: tuple[LibvirtDaemon, LibvirtDaemon], guest_image: Path, tmp_path: Path
) -> None:
    first, second = libvirt_daemon_pair
    flags = (
        libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_UNSAFE  # the disk is a shared local path, not shared storage
    )
    with connection(first) as conn_a, connection(second) as conn_b:
        disk = write_image(tmp_path / "mover.raw", template=guest_image)
        console = tmp_path / "mover.console"
        dom = conn_a.defineXML(guest_domain_xml("mover", disk, console))
        try:
            dom.create()
            before = wait_for_counter(console, 1, timeout=30)
            dom.migrateToURI3(second.uri, {}, flags)
            assert conn_a.listAllDomains(0) == []
            moved = conn_b.lookupByName("mover")
            assert moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
            after = wait_for_counter(console, before + 2, timeout=15)
            text = read_console(console)
            # Same RAM: the counter went on, the guest never rebooted.
            assert text.count(MARKER) == 1
            assert text.count("COUNT 0\r\n") == 1
            assert after >= before + 2
        finally:
            for conn in (conn_a, conn_b):
                for leftover in conn.listAllDomains(0):
                    if leftover.isActive():
                        leftover.destroy()
                    leftover.undefine()


def test_kill_restart_keeps_domains_and_stop_leaves_no_process(
    guest_image: Path, tmp_path: Path
) -> None:
    daemon = LibvirtDaemon(name="crash").start()
    try:
        with connection(daemon) as conn:
            disk = write_image(tmp_path / "survivor.raw", template=guest_image)
            console = tmp_path / "survivor.console"
            dom = conn.defineXML(
                guest_domain_xml("survivor", disk, console, console_kind="pty-log", accel="qemu")
            )
            conn.defineXML(guest_domain_xml("idle", disk, tmp_path / "idle.console"))
            dom.create()
            wait_for_counter(console, 0, timeout=30)
        qemu_pid = int((daemon.workdir / "run" / "qemu" / "survivor.pid").read_text())
        assert b"qemu" in Path(f"/proc/{qemu_pid}/cmdline").read_bytes()

        daemon.kill()
        assert not daemon.running
        assert Path(f"/proc/{qemu_pid}").exists()  # a crashed libvirtd leaves QEMU running
        before_restart = wait_for_counter(console, 1, timeout=15)

        daemon.restart()
        with connection(daemon) as conn:
            assert sorted(d.name() for d in conn.listAllDomains(0)) == ["idle", "survivor"]
            dom = conn.lookupByName("survivor")
            assert dom.isActive()  # the new daemon reconnected to the running QEMU
            assert wait_for_counter(console, before_restart + 1, timeout=10) > before_restart
            assert "default" in [p.name() for p in conn.listAllStoragePools(0)]
    finally:
        daemon.stop()
    assert not Path(f"/proc/{qemu_pid}").exists() or _is_zombie(qemu_pid)
    assert not daemon.workdir.exists()
    assert _processes_mentioning(str(daemon.workdir)) == []  # libvirtd, reaper, helpers


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                if text.encode() in cmdline:
                    found.append(cmdline.decode(errors="replace"))
    return found


_ORPHANING_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from test_libvirt_testbed import guest_domain_xml
    from anyvirt_libvirt.demo_image import write_image
    from anyvirt_libvirt.testbed.daemon import LibvirtDaemon

    tmp = Path(sys.argv[2])
    daemon = LibvirtDaemon(name="orphan").start()
    conn = daemon.open()
    disk = write_image(tmp / "orphan.raw", template=Path(sys.argv[3]))
    dom = conn.defineXML(guest_domain_xml("orphan", disk, tmp / "orphan.console", accel="qemu"))
    dom.create()
    qemu = (daemon.workdir / "run" / "qemu" / "orphan.pid").read_text().strip()
    print(daemon.pid, qemu, daemon.workdir, flush=True)
    time.sleep(600)
""")


def test_daemon_and_qemu_die_with_a_killed_test_process(
    guest_image: Path, tmp_path: Path
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _ORPHANING_CHILD, str(Path(__file__).parent), str(tmp_path),
         str(guest_image)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        daemon_pid, qemu_pid, workdir = child.stdout.readline().split()
        assert Path(f"/proc/{qemu_pid}").exists()
    finally:
        child.send_signal(signal.SIGKILL)  # no atexit, no fixture teardown
        child.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(workdir).exists():
        time.sleep(0.1)
    assert not Path(workdir).exists()
    for pid in (int(daemon_pid), int(qemu_pid)):
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def test_test_driver_file_served_by_the_daemon(
    libvirt_daemon: LibvirtDaemon, tmp_path: Path
) -> None:
    # A path that exists only inside the daemon's mount namespace proves the
    # daemon, not this process, loads and serves the file.
    make_test_driver_file(libvirt_daemon.workdir / "etc" / "bench-node.xml", 2000)
    inside = Path("/etc/libvirt/bench-node.xml")
    assert not inside.exists()
    conn = libvirt.open(uri_for_test_driver_file(inside, libvirt_daemon))
    try:
        assert conn.getType() == "TEST"
        start = time.monotonic()
        domains = conn.listAllDomains(0)
        stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
        elapsed = time.monotonic() - start
        assert len(domains) == 2000
        assert len(stats) == 2000
        running = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        assert len(running) == 1000
        assert conn.lookupByName("test-00001").state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        print(f"\n2,000 test-driver domains via libvirtd: list+stats {elapsed * 1000:.0f} ms")
    finally:
        conn.close()
