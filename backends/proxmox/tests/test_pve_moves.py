"""Moves and restores into Proxmox VE: schema-valid import requests, verified as far as the
platform lets anything be verified.

fakepve cannot hold disk content (the upload goes to the ``import`` stand-in of
``test_pve_image_import``), and without ``ssh=`` (``test_pve_disk_ssh``) nothing reads a
VM disk back from a node: so a move into Proxmox over the API alone is verified by
configuration and byte counts only, says so in its result, and ``delete_source=True`` is
refused before anything is copied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_pve_image_import
from pve_support import Traffic
from test_pve_image_import import ImportUploadStandIn

import anyvirt
from anyvirt import Capability, DiskSpec, NotSupported, VMSpec
from anyvirt.host import Host
from anyvirt.memory import reset
from anyvirt.testing.plugin import unique_name

importing = test_pve_image_import.importing
import_host = test_pve_image_import.import_host


@pytest.fixture
def memory_host() -> Iterator[Host]:
    name = unique_name("to-pve")
    with anyvirt.connect(f"memory://{name}") as host:
        yield host
    reset(name)


def _source(host: Host, tmp_path: Path) -> anyvirt.VM:
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(1024 * 1024) + bytes(3 * 1024 * 1024))
    return host.vms.create(VMSpec(name="app1", cpus=1, memory_mib=64,
                                  disks=[DiskSpec(image=str(image))]))


def test_a_move_into_proxmox_sends_schema_valid_imports_and_says_what_it_verified(
        memory_host: Host, import_host: Host, importing: ImportUploadStandIn, traffic: Traffic,
        tmp_path: Path) -> None:
    assert Capability.DISK_EXPORT not in import_host.capabilities
    vm = _source(memory_host, tmp_path)
    result = anyvirt.migrate(vm, to=import_host)
    try:
        assert result.verified == ("config", "byte-count"), "no read-back: PVE cannot export"
        assert result.disks == ()
        ((filename, sent),) = importing.uploads
        assert sent == 4 * 1024 * 1024 and filename.endswith(".raw")
        assert any(p.endswith("/qemu") for p in traffic.paths("POST"))
        assert memory_host.vms.exists("app1"), "the source stays"
    finally:
        import_host.vms.get(result.vm_id).delete()


def test_delete_source_into_proxmox_is_refused_before_anything(
        memory_host: Host, import_host: Host, importing: ImportUploadStandIn, traffic: Traffic,
        tmp_path: Path) -> None:
    vm = _source(memory_host, tmp_path)
    with pytest.raises(NotSupported, match="read back"):
        anyvirt.migrate(vm, to=import_host, delete_source=True)
    assert importing.uploads == [] and not any(p.endswith("/qemu") for p in traffic.paths("POST"))
    assert memory_host.vms.exists("app1")


def test_a_backup_restores_on_proxmox(memory_host: Host, import_host: Host,
                                      importing: ImportUploadStandIn, tmp_path: Path) -> None:
    archive = _source(memory_host, tmp_path).backup(tmp_path / "app1.avbk")
    restored = import_host.restore(archive, name="app1-restored")
    try:
        ((filename, sent),) = importing.uploads
        assert filename.endswith(".qcow2"), "the archive's compressed qcow2 goes as it is"
        assert 0 < sent < 2 * 1024 * 1024, "compressed: the zeros were never stored or sent"
        assert restored.info().memory_mib == 64
    finally:
        restored.delete()
