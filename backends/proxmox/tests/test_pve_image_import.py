"""Disks from image files: uploaded as ``import`` content, then ``import-from=``.

fakepve cannot hold disk content and accepts only ISO and container-template
uploads, so this is proven up to schema-valid requests: ``ImportUploadStandIn``
takes the upload (counting every byte streamed), records the file in fakepve's
storage and answers with a real fakepve task, and the create request must
name it in ``import-from=``. What the disk then holds cannot be read back here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fakepve import FakePve
from pve_support import PASSWORD, InProcessFakePve, Send, StandIn, Traffic, pve_response

import anyvirt
from anyvirt import Capability, DiskSpec, VMSpec
from anyvirt.errors import InvalidSpec
from anyvirt.host import Host
from anyvirt.kit import qemu_img


class ImportUploadStandIn(StandIn):
    """Stand-in for PVE 8.2's ``upload`` with ``content=import`` (fakepve refuses that content):
    reads the streamed body to its end, keeps the file's size in fakepve's storage and answers
    with the UPID of a task on the fake, as PVE's upload does."""

    def __init__(self, fake: InProcessFakePve) -> None:
        self.fake = fake
        self.uploads: list[tuple[str, int]] = []  # (filename, bytes of the file part)

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        fields = getattr(request.body, "fields", None)
        if fields is None or fields.get("content") != "import":
            return None
        match = re.search(r"/nodes/([^/]+)/storage/([^/]+)/upload$", str(request.url))
        assert match is not None
        node, storage = match.groups()
        body = b"".join(iter(lambda: request.body.read(1 << 20), b""))  # type: ignore[union-attr]
        rest = body.partition(b"application/octet-stream\r\n\r\n")[2]
        data = rest[: rest.rindex(b"\r\n--")]
        self.uploads.append((fields["filename"], len(data)))
        pve = self.fake.pve
        self.fake.sync(lambda: pve.store_file(storage, fields["filename"], len(data), content="import"))

        async def copied() -> None:
            return None

        upid = self.fake.call(pve.task(node, "imgcopy", "", "root@pam", copied))
        return pve_response(request, 200, upid)


@pytest.fixture
def importing(fake: InProcessFakePve, pve: FakePve, traffic: Traffic) -> Iterator[ImportUploadStandIn]:
    local = pve.storages["local"]
    before = local["content"]
    local["content"] = before + ",import"
    standin = ImportUploadStandIn(fake)
    traffic.standins.append(standin)
    yield standin
    local["content"] = before


@pytest.fixture
def import_host(fake: InProcessFakePve, importing: ImportUploadStandIn) -> Iterator[Host]:
    with anyvirt.connect(fake.uri, password=PASSWORD) as host:
        yield host


def _image(path: Path, fmt: str, size: int = 64 * 1024 * 1024) -> Path:
    qemu_img.create(path, fmt, size)
    return path


def test_without_an_import_storage_the_capability_is_not_declared(pve_host: Host) -> None:
    assert Capability.VM_CREATE_FROM_IMAGE not in pve_host.capabilities


def test_an_image_is_uploaded_and_imported(import_host: Host, importing: ImportUploadStandIn,
                                           traffic: Traffic, tmp_path: Path) -> None:
    assert Capability.VM_CREATE_FROM_IMAGE in import_host.capabilities
    image = _image(tmp_path / "base.qcow2", "qcow2")
    vm = import_host.vms.create(VMSpec(name="imported", memory_mib=64, node="pve1",
                                       disks=[DiskSpec(image=str(image)), DiskSpec(size_gib=0.0625)]))
    try:
        ((filename, sent),) = importing.uploads
        assert re.fullmatch(r"anyvirt-[0-9a-f]{32}\.qcow2", filename), "our own name, the caller's never"
        assert sent == image.stat().st_size, "every byte of the file was streamed"
        create = next(traffic.bodies[i] for i, (m, url) in enumerate(traffic.requests)
                      if m == "POST" and url.endswith("/nodes/pve1/qemu"))
        assert create["scsi0"] == f"local-lvm:0,import-from=local:import/{filename}"
        assert create["scsi1"] == "local-lvm:0.0625"
        removed = [p for p in traffic.paths("DELETE") if "/storage/local/content/" in p]
        assert removed == [f"/api2/json/nodes/pve1/storage/local/content/local:import/{filename}"]
        assert len(vm.info().disks) == 2
    finally:
        vm.delete()


def test_a_larger_size_grows_the_imported_disk(import_host: Host, importing: ImportUploadStandIn,
                                               traffic: Traffic, tmp_path: Path) -> None:
    image = _image(tmp_path / "small.raw", "raw")
    vm = import_host.vms.create(VMSpec(name="grown", memory_mib=64, node="pve1",
                                       disks=[DiskSpec(image=str(image), size_gib=1)]))
    try:
        resize = [traffic.bodies[i] for i, (m, url) in enumerate(traffic.requests)
                  if m == "PUT" and url.endswith("/resize")]
        assert resize == [{"disk": "scsi0", "size": "1048576K"}]
        assert importing.uploads[0][0].endswith(".raw"), "raw goes as it is"
    finally:
        vm.delete()


def test_other_formats_are_converted_to_qcow2(import_host: Host, importing: ImportUploadStandIn,
                                              tmp_path: Path) -> None:
    image = _image(tmp_path / "disk.vdi", "vdi")
    vm = import_host.vms.create(VMSpec(name="fromvdi", memory_mib=64, disks=[DiskSpec(image=str(image))]))
    try:
        assert importing.uploads[0][0].endswith(".qcow2")
    finally:
        vm.delete()


def test_an_image_with_a_backing_file_is_refused_before_any_upload(
        import_host: Host, importing: ImportUploadStandIn, traffic: Traffic, tmp_path: Path) -> None:
    base = _image(tmp_path / "base.qcow2", "qcow2")
    top = tmp_path / "top.qcow2"
    qemu_img.create(top, "qcow2", backing=base, backing_format="qcow2")
    with pytest.raises(InvalidSpec, match="backing"):
        import_host.vms.create(VMSpec(name="backed", memory_mib=64, disks=[DiskSpec(image=str(top))]))
    assert not importing.uploads and not any(p.endswith("/qemu") for p in traffic.paths("POST"))
