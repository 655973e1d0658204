"""Disks from image files: uploaded as ``import`` content (PVE 8.2+), then ``import-from=``.

An image the caller hands over is inspected first with the kit's qemu-img
runner (a backing file, an external extent, a ``json:`` name are refused
before anything is sent); raw, qcow2 and vmdk images go as they are, any
other format qemu-img reads is converted to qcow2 in a temporary file. The
file is streamed (never whole in memory) as a multipart upload to
``POST /nodes/{node}/storage/{storage}/upload`` with ``content=import``
under a name made here (``anyvirt-<uuid>.<format>``: no caller's string
reaches PVE's file system), the VM's disk is created with
``storage:0,import-from=<that volume>``, and the uploaded file is deleted
once the VM has its copy, or when anything fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from attrs import frozen

from anyvirt.errors import AnyvirtError
from anyvirt.kit import qemu_img
from anyvirt.tasks import Job
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.tasks import wait_task

AS_IS = ("raw", "qcow2", "vmdk")  # what PVE's import content takes without conversion
CHUNK = 1024 * 1024
MIN_VERSION = (8, 2)


@frozen
class Uploaded:
    storage: str
    volid: str  # "local:import/anyvirt-<uuid>.qcow2"
    virtual_size: int


class MultipartUpload:
    """A multipart/form-data body streamed from a file: its length is known up front (PVE's
    proxy wants a Content-Length), its bytes are read in chunks as requests sends them."""

    def __init__(self, fields: dict[str, str], filename: str, path: Path, job: Job) -> None:
        self.fields = dict(fields, filename=filename)  # what the request says, for logs and checks
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                        for k, v in fields.items())
        parts += (f'--{boundary}\r\nContent-Disposition: form-data; name="filename"; '
                  f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n')
        self._head, self._tail = parts.encode(), f"\r\n--{boundary}--\r\n".encode()
        self._path, self._job = path, job
        self._file_size = os.path.getsize(path)
        self._file: IO[bytes] | None = None
        self._stage = 0  # 0 head, 1 file, 2 tail, 3 done
        self.sent = 0

    def __len__(self) -> int:
        return len(self._head) + self._file_size + len(self._tail)

    def read(self, size: int = -1) -> bytes:
        if self._stage == 0:
            self._stage = 1
            return self._head
        if self._stage == 1:
            if self._file is None:
                self._file = open(self._path, "rb")  # noqa: SIM115 - closed at its end below
            self._job.check()
            data = self._file.read(CHUNK if size is None or size < 0 else max(size, 1))
            if data:
                self.sent += len(data)
                self._job.progress(100.0 * self.sent / max(self._file_size, 1), "uploading the disk image")
                return data
            self._file.close()
            self._stage = 2
        if self._stage == 2:
            self._stage = 3
            return self._tail
        return b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def import_storages(inv: Inventory, node: str) -> list[dict[str, Any]]:
    """The node's active storages that take ``import`` content, roomiest first."""
    rows = inv.node_storages(node, content="import")
    return sorted(rows, key=lambda s: -int(s.get("avail") or 0))


@contextmanager
def prepared(image: str, job: Job, image_format: str | None = None) -> Iterator[tuple[Path, str, int]]:
    """(file to upload, its format, virtual size): the image itself, or a qcow2 copy.
    ``image_format`` where the caller knows it (``DiskSpec.format``): read as that, never
    probed, so a raw guest disk that starts with an image header is uploaded as raw."""
    found = qemu_img.inspect_untrusted(image, qemu_img.FORMATS, format=image_format, job=job)
    if found.format in AS_IS:
        yield Path(image), found.format, found.virtual_size
        return
    with tempfile.TemporaryDirectory(prefix="anyvirt-pve-import-") as tmp:
        copy = Path(tmp) / "disk.qcow2"
        qemu_img.convert(image, copy, source_format=found.format, format="qcow2", job=job)
        yield copy, "qcow2", found.virtual_size


def upload(inv: Inventory, node: str, storage: str, image: str, job: Job,
           image_format: str | None = None) -> Uploaded:
    """Upload ``image`` (in ``image_format``, else probed) to ``storage`` on ``node`` as
    import content; its volume id."""
    with prepared(image, job, image_format) as (path, fmt, virtual_size):
        filename = f"anyvirt-{uuid.uuid4().hex}.{fmt}"
        body = MultipartUpload({"content": "import"}, filename, path, job)
        what = f"uploading disk image {os.path.basename(image)!r} to {storage!r}"
        try:
            upid = inv.session.upload(("nodes", node, "storage", storage, "upload"), body, what)
        finally:
            body.close()
        if isinstance(upid, str) and upid.startswith("UPID:"):
            wait_task(inv.session, upid, job, what)
    return Uploaded(storage, f"{storage}:import/{filename}", virtual_size)


def remove(inv: Inventory, node: str, uploads: list[Uploaded]) -> None:
    """Delete uploaded image files (the VM has its own copies, or the create failed)."""
    for item in uploads:
        with contextlib.suppress(AnyvirtError):
            upid = inv.session.delete(("nodes", node, "storage", item.storage, "content", item.volid),
                                      "removing an uploaded disk image")
            if isinstance(upid, str) and upid.startswith("UPID:"):
                wait_task(inv.session, upid, Job("removing an uploaded disk image", 120), "removing it")
