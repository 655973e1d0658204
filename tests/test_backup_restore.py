"""Backup and restore through the public API: bad input refused first, no clashes made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import anyvirt
from anyvirt import CapacityExceeded, InvalidSpec, NicSpec, Overcommit, VMSpec
from anyvirt.memory import reset
from anyvirt.testing.plugin import unique_name


@pytest.fixture
def host() -> Iterator[anyvirt.Host]:
    name = unique_name("bk")
    with anyvirt.connect(f"memory://{name}") as h:
        yield h
    reset(name)


def test_restore_next_to_the_original_gets_its_own_mac(host: anyvirt.Host, tmp_path: Path) -> None:
    web = host.vms.create(VMSpec(name="web1", nics=[NicSpec(network="default")]))
    archive = web.backup(tmp_path / "web1.avbk")
    copy = host.restore(archive, name="web1-restored")
    assert copy.info().nics[0].mac != web.info().nics[0].mac


def test_restore_where_the_mac_is_free_keeps_it(host: anyvirt.Host, tmp_path: Path) -> None:
    mac = "52:54:00:aa:bb:07"
    web = host.vms.create(VMSpec(name="web1", nics=[NicSpec(network="default", mac=mac)]))
    archive = web.backup(tmp_path / "web1.avbk")
    web.delete()
    assert host.restore(archive).info().nics[0].mac == mac


def test_restore_with_an_empty_name_is_refused(host: anyvirt.Host, tmp_path: Path) -> None:
    archive = host.vms.create(VMSpec(name="web1")).backup(tmp_path / "web1.avbk")
    with pytest.raises(InvalidSpec, match="name must not be empty"):
        host.restore(archive, name="")
    assert [vm.name for vm in host.vms.list()] == ["web1"]


def test_restore_past_the_overcommit_limit_is_refused(tmp_path: Path) -> None:
    name = unique_name("bk-small")
    try:
        big = anyvirt.connect(f"memory://{name}-big")
        archive = big.vms.create(VMSpec(name="fat", cpus=1, memory_mib=4096)).backup(
            tmp_path / "fat.avbk")
        small = anyvirt.connect(f"memory://{name}?nodes=1&memory_mib=1024",
                                overcommit=Overcommit(cpu=1.0, memory=1.0, counts="defined"))
        with pytest.raises(CapacityExceeded):
            small.restore(archive)
        assert small.vms.list() == []
    finally:
        reset(name)
        reset(f"{name}-big")


def test_backup_into_a_missing_directory_is_invalid_input(host: anyvirt.Host,
                                                          tmp_path: Path) -> None:
    vm = host.vms.create(VMSpec(name="web1"))
    with pytest.raises(InvalidSpec, match="does not exist"):
        vm.backup(tmp_path / "nowhere" / "web1.avbk")
    assert list(tmp_path.iterdir()) == []
