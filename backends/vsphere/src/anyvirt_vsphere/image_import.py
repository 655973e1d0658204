"""Disks from image files: any format qemu-img reads becomes a flat VMDK on a datastore.

A flat VMDK is a small text descriptor plus an extent holding the raw disk
bytes. So an image is converted to raw with ``qemu-img convert`` into a
temporary (sparse) file, streamed to ``[datastore] anyvirt-import-<id>/diskN-flat.vmdk``
through the datastore's HTTPS interface, and a descriptor written next to
it; the new VM's disk then points at that descriptor. vcsim accepts exactly
this pair, and so does ESXi.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from anyvirt.errors import InvalidSpec, NotSupported
from anyvirt.model import GIB, Capability, DiskSpec, evolve
from anyvirt.tasks import Job
from anyvirt_vsphere import datastore_files
from anyvirt_vsphere.inventory import datastore_path

SECTOR = 512


def is_local_image(disk: DiskSpec) -> bool:
    return disk.image is not None and not disk.image.startswith("[")


def _qemu_img() -> str:
    found = shutil.which("qemu-img")
    if found is None:
        raise NotSupported(
            "vsphere", Capability.VM_CREATE_FROM_IMAGE, "qemu-img is needed (apt-get install qemu-utils)"
        )
    return found


def _virtual_size(qemu_img: str, image: Path, timeout: float | None) -> int:
    out = subprocess.run(
        [qemu_img, "info", "--output=json", str(image)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise InvalidSpec(f"disk image {str(image)!r} cannot be read: {out.stderr.strip()[:300]}")
    return int(json.loads(out.stdout)["virtual-size"])


def descriptor(extent_name: str, size_bytes: int) -> bytes:
    """A monolithicFlat descriptor for one raw extent of ``size_bytes``."""
    sectors = size_bytes // SECTOR
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n'
        f'RW {sectors} FLAT "{extent_name}" 0\n\n'
        '# The Disk Data Base\nddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "13"\n'
    ).encode()


def upload_images(
    driver: object, disks: Sequence[DiskSpec], datastore: str, job: Job
) -> tuple[list[DiskSpec], str | None]:
    """Replace local images by uploaded flat VMDKs; returns the new disk specs and the
    datastore folder they went to (None when nothing was uploaded)."""
    if not any(is_local_image(d) for d in disks):
        return list(disks), None
    qemu_img = _qemu_img()
    folder = f"anyvirt-import-{uuid.uuid4().hex[:12]}"
    out: list[DiskSpec] = []
    with tempfile.TemporaryDirectory(prefix="anyvirt-vsphere-") as scratch:
        for index, disk in enumerate(disks):
            if not is_local_image(disk):
                out.append(disk)
                continue
            assert disk.image is not None
            image = Path(disk.image)
            if not image.is_file():
                raise InvalidSpec(f"disk image {disk.image!r} does not exist")
            job.progress(None, f"converting {image.name}")
            size = max(_virtual_size(qemu_img, image, job.remaining()), disk.size_bytes or 0)
            size = -(-size // SECTOR) * SECTOR
            raw = Path(scratch) / f"disk{index}.raw"
            converted = subprocess.run(
                [qemu_img, "convert", "-O", "raw", str(image), str(raw)],
                capture_output=True,
                text=True,
                timeout=job.remaining(),
                check=False,
            )
            if converted.returncode != 0:
                raise InvalidSpec(
                    f"disk image {disk.image!r} cannot be converted: {converted.stderr.strip()[:300]}"
                )
            with raw.open("r+b") as handle:
                handle.truncate(size)  # grow to size_gib when asked; sparse
            job.progress(None, f"uploading {image.name}")
            extent = f"disk{index}-flat.vmdk"
            datastore_files.upload(driver, datastore, f"{folder}/{extent}", raw)
            desc = Path(scratch) / f"disk{index}.vmdk"
            desc.write_bytes(descriptor(extent, size))
            datastore_files.upload(driver, datastore, f"{folder}/disk{index}.vmdk", desc)
            raw.unlink()
            out.append(
                evolve(  # the size is exact (a power-of-two division): vSphere is told it
                    disk,
                    image=datastore_path(datastore, f"{folder}/disk{index}.vmdk"),
                    size_gib=size / GIB,
                    storage=None,
                )
            )
    return out, folder
