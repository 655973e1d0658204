"""Real QEMU guests on a real libvirtd: boots, ACPI shutdown, snapshots, clones.

The tiny guest prints a marker and then a counter (from 0 at every cold
boot) on its serial console, which the driver logs to the file it reports in
``vm.info().extra["console_log"]``; it stores the counter in disk sector 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from anyvirt_libvirt.demo_image import (
    MARKER,
    OFF_MARKER,
    disk_counter,
    last_counter,
    read_console,
    wait_for_counter,
    wait_for_marker,
)
from libvirt_support import console_log, guest_spec

import anyvirt.images
from anyvirt.host import Host
from anyvirt.model import PowerState
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM


def counters_after(log: Path, offset: int) -> list[int]:
    """COUNT values printed after byte ``offset`` of the console log (complete lines only)."""
    text = read_console(log)[offset:]
    text = text[: text.rfind("\n") + 1]
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("COUNT ")]


def wait_new_counters(log: Path, offset: int, count: int = 2, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = counters_after(log, offset)
        if len(values) >= count:
            return values
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} new COUNT lines on {log}: {read_console(log)[-200:]!r}")


def test_boot_acpi_stop_and_force_stop(guest: Callable[[str], VM]) -> None:
    vm = guest("boot")
    log = console_log(vm)
    vm.start()
    wait_for_marker(log)
    wait_for_counter(log, 1)
    vm.stop(timeout=60)  # ACPI power button: the guest itself powers off
    assert vm.refresh().state is PowerState.STOPPED
    assert OFF_MARKER in read_console(log), "the guest saw the ACPI button"

    offset = len(read_console(log))
    vm.start()
    wait_for_marker(log)
    wait_for_counter(log, 1)
    vm.stop(force=True)
    assert vm.refresh().state is PowerState.STOPPED
    assert OFF_MARKER not in read_console(log)[offset:], "force stop does not ask the guest"


def test_memory_snapshot_revert_resumes_the_guest(guest: Callable[[str], VM]) -> None:
    vm = guest("memsnap")
    log = console_log(vm)
    vm.start()
    wait_for_counter(log, 3)
    snap = vm.snapshots.create("s1", memory=True)
    at_snapshot = last_counter(log)
    assert at_snapshot is not None and at_snapshot >= 3
    later = wait_for_counter(log, at_snapshot + 3)
    offset = len(read_console(log))
    snap.revert()
    assert vm.refresh().state is PowerState.RUNNING
    resumed = wait_new_counters(log, offset)
    # the guest continues from the snapshot's counter: not from 0, not from where it was
    assert at_snapshot <= resumed[0] <= at_snapshot + 2, (at_snapshot, later, resumed)
    assert resumed[0] < later
    assert MARKER not in read_console(log)[offset:], "a memory revert does not reboot"


def test_disk_snapshot_revert_restores_disk_content(guest: Callable[[str], VM]) -> None:
    vm = guest("disksnap")
    log = console_log(vm)
    disk = Path(vm.info().disks[0].path or "")
    vm.start()
    wait_for_counter(log, 2)
    vm.stop(force=True)
    before = disk_counter(disk)
    assert before is not None and before >= 2
    snap = vm.snapshots.create("disk", memory=False)
    assert snap.info.memory is False

    offset = len(read_console(log))
    vm.start()
    wait_for_counter(log, before + 3)  # a cold boot counts from 0: past the saved value
    assert max(counters_after(log, offset)) > before
    vm.stop(force=True)
    assert disk_counter(disk) != before

    snap.revert()
    assert vm.refresh().state is PowerState.STOPPED
    assert disk_counter(disk) == before


def test_clones_boot_on_their_own(host: Host, guest: Callable[[str], VM],
                                  vms: Callable[[VM], VM]) -> None:
    original = guest("orig")
    linked = vms(original.clone(unique_name("linked"), linked=True))
    full = vms(original.clone(unique_name("full")))
    linked_info, full_info = linked.info(), full.info()
    assert linked_info.disks[0].backing, "a linked clone's disk is an overlay"
    assert not full_info.disks[0].backing
    for clone in (linked, full):
        assert clone.id != original.id
        clone.start()
    for clone in (linked, full):
        wait_for_counter(console_log(clone), 1)
    assert console_log(linked) != console_log(full) != console_log(original)
    for clone in (linked, full):
        log = console_log(clone)
        clone.stop(force=True)
        clone.delete(disks=True)
        assert not host.vms.exists(clone.id)
        assert not log.exists(), "the console log goes with the VM's disks"
    # the original survives its clones, disks and all, and still boots
    assert Path(original.info().disks[0].path or "").exists()
    original.start()
    wait_for_counter(console_log(original), 1)
    original.stop(force=True)


def test_suspend_and_start_from_suspended(guest: Callable[[str], VM],
                                          vms: Callable[[VM], VM]) -> None:
    vm = guest("suspend")
    log = console_log(vm)
    vm.start()
    seen = wait_for_counter(log, 2)
    vm.suspend()
    assert vm.refresh().state is PowerState.SUSPENDED
    # a linked clone of a suspended VM freezes its disk as the clone's base: the
    # original must resume on its new overlay, not write into that shared base
    clone = vms(vm.clone(unique_name("suspclone"), linked=True))
    base = clone.info().disks[0].backing
    offset = len(read_console(log))
    vm.start()
    resumed = wait_new_counters(log, offset)
    assert seen <= resumed[0] <= seen + 3, "restored from the managed save, not rebooted"
    live_disk = vm.info().disks[0]  # a running VM's info is its live definition
    assert base and live_disk.path != base and live_disk.backing == base
    vm.pause()
    assert vm.refresh().state is PowerState.PAUSED
    vm.resume()
    assert vm.refresh().state is PowerState.RUNNING


def test_the_demo_image_boots_as_anyvirt_image_demo_writes_it(
    host: Host, vms: Callable[[VM], VM], tmp_path: Path
) -> None:
    """``anyvirt image demo PATH`` (its API: anyvirt.images.write) boots, in both formats."""
    for fmt in ("raw", "qcow2"):
        image = anyvirt.images.write("demo", tmp_path / f"demo.{fmt}", fmt)
        vm = vms(host.vms.create(guest_spec(unique_name(f"demo-{fmt}"), image)))
        vm.start()
        wait_for_marker(console_log(vm))
        wait_for_counter(console_log(vm), 1)
        vm.stop(force=True)
