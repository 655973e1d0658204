"""Backups: a portable archive that restores on the same (or any) backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from anyvirt.errors import AlreadyExists, InvalidSpec, InvalidState
from anyvirt.host import Host
from anyvirt.model import Capability
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite.base import ContractTests
from anyvirt.vm import VM


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.DISK_EXPORT,
                              Capability.VM_CREATE_FROM_IMAGE)
class TestBackup(ContractTests):
    def test_backup_and_restore(self, anyvirt_host: Host, make_vm: Callable[..., VM],
                                tmp_path: Path) -> None:
        vm = make_vm()
        archive = vm.backup(tmp_path / "vm.avbk")
        assert archive.stat().st_size > 0
        with pytest.raises(AlreadyExists):
            vm.backup(archive)
        name = unique_name("restored")
        restored = make_vm.track(anyvirt_host.restore(archive, name=name))  # type: ignore[attr-defined]
        assert restored.name == name
        assert restored.id != vm.id
        a, b = vm.info(), restored.info()
        assert (b.cpus, b.memory_mib, len(b.disks), len(b.nics)) == (
            a.cpus, a.memory_mib, len(a.disks), len(a.nics))
        for src, dst in zip(a.disks, b.disks, strict=True):
            assert (dst.size_bytes or 0) >= (src.size_bytes or 0)

    @pytest.mark.anyvirt_requires(Capability.START, Capability.POWER_OFF)
    def test_a_running_vm_is_not_backed_up(self, make_vm: Callable[..., VM], tmp_path: Path) -> None:
        vm = make_vm()
        vm.start()
        with pytest.raises(InvalidState, match="stop it first"):
            vm.backup(tmp_path / "x.avbk")
        assert not (tmp_path / "x.avbk").exists()

    def test_garbage_is_not_restored(self, anyvirt_host: Host, tmp_path: Path) -> None:
        junk = tmp_path / "junk.avbk"
        junk.write_bytes(b"not a tar file at all")
        before = len(anyvirt_host.vms.list())
        with pytest.raises(InvalidSpec):
            anyvirt_host.restore(junk)
        assert len(anyvirt_host.vms.list()) == before
