"""Cross-platform moves and portable backups, on memory:// hosts with different hardware."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

import anyvirt
from anyvirt import (
    DiskSpec,
    Firmware,
    InvalidState,
    NicSpec,
    NotSupported,
    PowerState,
    TaskFailed,
    VMSpec,
    WarningCode,
)
from anyvirt.memory import MemoryDriver, inject_failure, reset
from anyvirt.registry import register
from anyvirt.testing.plugin import unique_name


class VmwareLikeDriver(MemoryDriver):
    """A memory host that speaks another platform's hardware dialect."""

    backend = "vmwarelike"
    firmware_support = frozenset({Firmware.BIOS})
    disk_buses: ClassVar[tuple[str, ...]] = ("scsi", "sata")
    nic_models: ClassVar[tuple[str, ...]] = ("vmxnet3", "e1000e")
    mac_prefixes: ClassVar[tuple[str, ...] | None] = ("00:50:56",)


register("vmwarelike", VmwareLikeDriver)


NETMAP = {"lab-only": "default"}  # the target has no lab-only network


@pytest.fixture
def hosts() -> Iterator[tuple[anyvirt.Host, anyvirt.Host]]:
    a, b = unique_name("src"), unique_name("dst")
    yield anyvirt.connect(f"memory://{a}"), anyvirt.connect(f"vmwarelike://{b}")
    reset(a)
    reset(b)


def _source_vm(host: anyvirt.Host, tmp_path: Path) -> anyvirt.VM:
    image = tmp_path / "boot.img"
    image.write_bytes(b"\xeb\x3c" + b"\x00" * 508 + b"\x55\xaa" + b"payload" * 100)
    return host.vms.create(VMSpec(
        name="app1", cpus=2, memory_mib=1024, firmware="efi",
        disks=[DiskSpec(image=str(image), bus="virtio"), DiskSpec(size_gib=1, bus="sata")],
        nics=[NicSpec(network="default", model="virtio", mac="52:54:00:aa:bb:01"),
              NicSpec(network="lab-only", model="e1000")],
    ))


def test_plan_maps_hardware_with_typed_warnings(hosts: tuple[anyvirt.Host, anyvirt.Host],
                                                tmp_path: Path) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    vm.snapshots.create("before-move")
    plan = anyvirt.plan_migration(vm, to=dst, networks=NETMAP)
    codes = {w.code for w in plan.warnings}
    assert {WarningCode.EFI_STATE_LOST, WarningCode.FIRMWARE_CHANGED, WarningCode.DISK_BUS_CHANGED,
            WarningCode.NIC_MODEL_CHANGED, WarningCode.MAC_CHANGED,
            WarningCode.SNAPSHOTS_DROPPED} <= codes
    assert [(m.source, m.target, m.how) for m in plan.networks] == [
        ("default", "default", "same name"), ("lab-only", "default", "mapped")]
    assert [(d.id, d.target_format, d.target_bus) for d in plan.disks] == [
        ("disk0", "raw", "scsi"), ("disk1", "raw", "sata")]
    assert plan.spec.firmware is Firmware.BIOS
    assert [d.bus for d in plan.spec.disks] == ["scsi", "sata"]
    assert [n.model for n in plan.spec.nics] == ["vmxnet3", "vmxnet3"]
    assert plan.spec.nics[0].mac is None
    assert not dst.vms.exists("app1"), "planning changes nothing"


def test_migrate_copies_disks_verifies_and_keeps_the_source(
    hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path
) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    vm.start()
    with pytest.raises(InvalidState, match="stop it first"):
        anyvirt.migrate(vm, to=dst, networks=NETMAP)
    assert not dst.vms.exists("app1")
    result = anyvirt.migrate(vm, to=dst, shutdown=True, networks=NETMAP)
    assert result.consistency == "shut down first"
    assert result.verified == ("config", "byte-count", "read-back")
    assert [(d.id, d.method) for d in result.disks] == [("disk0", "sha256"), ("disk1", "sha256")]
    assert result.disks[0].source_sha256 == result.disks[0].target_sha256
    assert "efi-state-lost" in result.warnings
    copy = dst.vms.get("app1")
    assert copy.state is PowerState.RUNNING, "it was running, so the copy is started"
    assert src.vms.get("app1").state is PowerState.STOPPED, "the source is kept, stopped"
    assert result.bytes_transferred is not None and result.bytes_transferred >= 1024**3
    src_data = src.vms.get("app1").native.contents["disk0"][1]
    assert copy.native.contents["disk0"][1] == src_data, "disk content arrives byte for byte"


def test_migrate_with_delete_source(hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    anyvirt.migrate(vm, to=dst, delete_source=True, name="app1-moved", networks=NETMAP)
    assert dst.vms.get("app1-moved").state is PowerState.STOPPED
    assert not src.vms.exists("app1")


def test_a_failed_import_leaves_nothing_and_harms_no_source(
    hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path
) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    inject_failure(dst.driver.world.name, "create_vm", TaskFailed("datastore full"))  # type: ignore[attr-defined]
    with pytest.raises(TaskFailed, match="datastore full"):
        anyvirt.migrate(vm, to=dst, delete_source=True, networks=NETMAP)
    assert dst.vms.list() == []
    assert src.vms.get("app1").id == vm.id


def test_source_without_disk_export(hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    limited = anyvirt.connect(f"{src.uri}?without=disk.export")
    with pytest.raises(NotSupported, match=r"disk\.export"):
        anyvirt.migrate(limited.vms.get(vm.id), to=dst)


def test_backup_restores_on_another_platform(hosts: tuple[anyvirt.Host, anyvirt.Host],
                                             tmp_path: Path) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    archive = vm.backup(tmp_path / "app1.avbk")
    restored = dst.restore(archive, name="app1-restored", networks=NETMAP)
    info = restored.info()
    assert [n.network for n in info.nics] == ["default", "default"]
    assert (info.cpus, info.memory_mib, len(info.disks), len(info.nics)) == (2, 1024, 2, 2)
    # the archive holds qcow2 (no zeros stored), which rounds the size up to whole sectors
    restored_bytes = restored.native.contents["disk0"][1]
    assert restored_bytes.rstrip(b"\0") == vm.native.contents["disk0"][1].rstrip(b"\0")
    manifest = anyvirt.migration.read_manifest(archive)
    assert manifest["vm"]["name"] == "app1"


def test_a_running_vm_moves_from_a_snapshot_and_keeps_running(
    hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path
) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    vm.start()
    result = anyvirt.migrate(vm, to=dst, snapshot=True, networks=NETMAP)
    assert result.consistency == "crash-consistent snapshot"
    assert "read-back" in result.verified
    assert vm.refresh().state is PowerState.RUNNING, "the source never stopped"
    assert vm.snapshots.list() == [], "the point-in-time snapshot is removed afterwards"
    assert dst.vms.get("app1").state is PowerState.RUNNING


def test_a_running_vm_with_snapshots_is_refused_a_snapshot_copy(
    hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path
) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    vm.snapshots.create("old")
    vm.start()
    with pytest.raises(InvalidState, match="has snapshots"):
        anyvirt.migrate(vm, to=dst, snapshot=True, networks=NETMAP)
    with pytest.raises(InvalidState, match="shutdown=True"):
        anyvirt.migrate(vm, to=dst, networks=NETMAP)
    with pytest.raises(anyvirt.InvalidSpec, match="exclude each other"):
        anyvirt.migrate(vm, to=dst, snapshot=True, shutdown=True, networks=NETMAP)
    assert dst.vms.list() == [] and [s.name for s in vm.snapshots.list()] == ["old"]
    assert vm.refresh().state is PowerState.RUNNING


def test_an_unmapped_network_is_refused_in_the_plan(hosts: tuple[anyvirt.Host, anyvirt.Host],
                                                    tmp_path: Path) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    with pytest.raises(anyvirt.InvalidSpec, match="network 'lab-only' does not exist"):
        anyvirt.plan_migration(vm, to=dst)
    with pytest.raises(anyvirt.InvalidSpec, match="has no network 'nowhere'"):
        anyvirt.plan_migration(vm, to=dst, networks={"lab-only": "nowhere"})
    plan = anyvirt.plan_migration(vm, to=dst, networks={"*": "default"})
    assert [n.how for n in plan.networks] == ["same name", "mapped"]
    assert dst.vms.list() == []


def test_restore_follows_the_move_rule_for_an_unmapped_network(
        hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path) -> None:
    """One rule for one question: a NIC on a network the target lacks is refused by a
    restore (an archive or a repository's point) as by a move, naming the target's
    networks, before anything is made; ``networks=`` maps it for all three."""
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    archive = vm.backup(tmp_path / "app1.avbk")
    repo = anyvirt.BackupRepository(tmp_path / "repo")
    point = repo.backup(vm)
    unmapped = r"network 'lab-only' does not exist on .*\(it has: 'default'\)"
    with pytest.raises(anyvirt.InvalidSpec, match=unmapped):
        anyvirt.plan_migration(vm, to=dst)
    with pytest.raises(anyvirt.InvalidSpec, match=unmapped):
        dst.restore(archive, name="app1-restored")
    with pytest.raises(anyvirt.InvalidSpec, match=unmapped):
        repo.restore(point, to=dst, name="app1-restored")
    with pytest.raises(anyvirt.InvalidSpec, match="has no network 'nowhere'"):
        dst.restore(archive, name="app1-restored", networks={"lab-only": "nowhere"})
    assert dst.vms.list() == []
    one = dst.restore(archive, name="app1-restored", networks={"*": "default"})
    two = repo.restore(point, to=dst, name="app1-point", networks=NETMAP)
    for made in (one, two):
        assert [n.network for n in made.info().nics] == ["default", "default"]


def test_delete_source_needs_a_target_that_can_be_read_back(
    hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path
) -> None:
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    blind = anyvirt.connect(f"{dst.uri}?without=disk.export")
    with pytest.raises(NotSupported, match="read back"):
        anyvirt.migrate(vm, to=blind, delete_source=True, networks=NETMAP)
    result = anyvirt.migrate(vm, to=blind, networks=NETMAP)
    assert result.verified == ("config", "byte-count") and result.disks == ()
    assert src.vms.exists("app1")


def test_a_copy_that_differs_is_removed_and_the_source_kept(
    hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target that stores other bytes than it was given (a datastore that truncates):
    the read-back catches it, the copy goes, delete_source never runs."""
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    real_create = type(dst.driver).create_vm

    def corrupting_create(self: MemoryDriver, spec: VMSpec, job: anyvirt.tasks.Job) -> object:
        made = real_create(self, spec, job)
        vm_state = self.world.vms[made.id]
        fmt, data = vm_state.contents["disk0"]
        vm_state.contents["disk0"] = (fmt, data[:-1] + bytes([data[-1] ^ 1]))
        return made

    monkeypatch.setattr(type(dst.driver), "create_vm", corrupting_create)
    with pytest.raises(TaskFailed, match="disk disk0"):
        anyvirt.migrate(vm, to=dst, delete_source=True, networks=NETMAP)
    assert dst.vms.list() == []
    assert src.vms.exists("app1")


def test_a_move_reports_one_forward_moving_progress(hosts: tuple[anyvirt.Host, anyvirt.Host],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from anyvirt.kit import streams

    monkeypatch.setattr(streams, "PROGRESS_EVERY", 0.0)
    src, dst = hosts
    vm = _source_vm(src, tmp_path)
    seen: list[tuple[float, str]] = []
    anyvirt.migrate(vm, to=dst, networks=NETMAP,
                    on_progress=lambda t: seen.append((t.progress or 0.0, t.message or "")))
    percents = [p for p, _ in seen]
    assert percents == sorted(percents), "export, import and read-back share one bar"
    assert percents[-1] >= 99 and any("verifying" in m for _, m in seen)
