"""Images into vSphere without a temporary copy, and downloads that refuse to be short."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from anyvirt_vsphere.driver import VSphereDriver
from anyvirt_vsphere.testbed.vcsim import Vcsim

from anyvirt.host import Host
from anyvirt.kit import qemu_img, raw_view
from anyvirt.model import DiskSpec, VMSpec
from anyvirt.tasks import Job


def test_a_qcow2_streams_through_a_raw_view_with_no_conversion(
        vsphere_host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(1024 * 1024) + bytes(1024 * 1024)
    raw = tmp_path / "src.raw"
    raw.write_bytes(data)
    image = tmp_path / "src.qcow2"
    qemu_img.convert(raw, image, source_format="raw", format="qcow2")

    def no_temporary_copy(*args: object, **kwargs: object) -> None:
        raise AssertionError("the import converted into a temporary file")

    if raw_view.available():  # else the import converts, as it must
        monkeypatch.setattr(qemu_img, "convert", no_temporary_copy)
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    vm = vsphere_host.vms.create(VMSpec(name="streamed", node=node,
                                        disks=[DiskSpec(image=str(image))]))
    try:
        driver = vsphere_host.driver
        assert isinstance(driver, VSphereDriver)
        out = tmp_path / "out"
        out.mkdir()
        exported = driver.export_disks(vm.id, out, Job("export", 60))
        assert Path(exported[0].path).read_bytes() == data
        assert exported[0].sha256 is not None and exported[0].stream_bytes == len(data)
    finally:
        vm.delete(disks=True)


def test_a_vm_made_from_an_image_and_deleted_leaves_nothing_on_the_datastore(
        vsphere_host: Host, vcsim: Vcsim, tmp_path: Path) -> None:
    """The lease import writes the disk into the VM's own folder (no ``anyvirt-import-*``
    folder), and ``delete(disks=True)`` takes the folder with it."""
    assert vcsim.datastore_dir is not None
    image = tmp_path / "data.raw"
    image.write_bytes(os.urandom(1024 * 1024))
    before = {p for p in vcsim.datastore_dir.rglob("*")}
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    vm = vsphere_host.vms.create(VMSpec(name="made-and-gone", node=node,
                                        disks=[DiskSpec(image=str(image))]))
    assert (vm.info().disks[0].path or "").startswith("[LocalDS_0] made-and-gone/")
    vm.delete(disks=True)
    assert {p for p in vcsim.datastore_dir.rglob("*")} - before == set()


@pytest.mark.parametrize("way", ["lease", "datastore"])
def test_an_image_of_an_odd_number_of_sectors_loses_no_byte(
        vsphere_host: Host, tmp_path: Path, way: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """vSphere counts a disk's capacity in KiB: an image of 2049 sectors becomes a disk of
    1025 KiB (a zero tail of 512 bytes), never 1024 KiB missing its last sector, by either
    way of importing."""
    data = os.urandom(2049 * 512)
    image = tmp_path / "odd.raw"
    image.write_bytes(data)
    driver = vsphere_host.driver
    assert isinstance(driver, VSphereDriver)
    monkeypatch.setattr(driver, "nfc_keeps_uploads", way == "lease")
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    vm = vsphere_host.vms.create(VMSpec(name=f"odd-{way}", node=node,
                                        disks=[DiskSpec(image=str(image))]))
    try:
        assert vm.info().disks[0].size_bytes == 1025 * 1024
        out = tmp_path / "out"
        out.mkdir()
        content = Path(driver.export_disks(vm.id, out, Job("export", 60))[0].path).read_bytes()
        assert content == data + bytes(512)
    finally:
        vm.delete(disks=True)
