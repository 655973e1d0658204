"""Bringing a disk image of any format into VirtualBox's VDI, with the kit's qemu-img runner.

The image is one a user handed over: the kit inspects it as untrusted (only its
allow-listed formats; no backing file, external extent or data file that
would make qemu-img read something the image chose) before converting it.
"""

from __future__ import annotations

from anyvirt.kit import qemu_img
from anyvirt.tasks import Job


def available() -> bool:
    return qemu_img.available()


def inspect(image: str, image_format: str | None = None) -> qemu_img.ImageInfo:
    """Refuse an image anyvirt will not read (``InvalidSpec``), before anything is made.
    ``image_format`` where the caller knows it (``DiskSpec.format``): read as that, never
    probed (a raw guest disk may start with any image's header)."""
    return qemu_img.inspect_untrusted(image, qemu_img.FORMATS, format=image_format)


def to_vdi(image: str, dest: str, job: Job, image_format: str | None = None) -> int:
    """Convert ``image`` (in ``image_format``, else probed) into a new VDI file ``dest``;
    returns its virtual size in bytes."""
    found = inspect(image, image_format)
    qemu_img.convert(image, dest, source_format=found.format, format="vdi", job=job)
    return found.virtual_size
