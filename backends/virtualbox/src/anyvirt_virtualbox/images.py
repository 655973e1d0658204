"""Bringing a disk image of any format into VirtualBox's VDI, with ``qemu-img``.

The image is inspected first: only the formats listed here are accepted, and
an image that names a backing file is refused (converting it would read a
file the image chose). Paths are made absolute so none can pass for an option.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from anyvirt.errors import InvalidSpec, TaskFailed
from anyvirt.tasks import Job

FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vpc", "vhdx", "qed")
_TIMEOUT = 3600.0


def qemu_img() -> str | None:
    return shutil.which("qemu-img")


def _run(args: list[str], what: str, timeout: float) -> str:
    binary = qemu_img()
    if binary is None:
        raise InvalidSpec("disk images are converted with qemu-img, which is not installed")
    try:
        done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TaskFailed(f"{what}: qemu-img did not finish within {timeout:g} s") from exc
    if done.returncode != 0:
        raise InvalidSpec(f"{what}: qemu-img failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def inspect(image: str) -> tuple[str, int]:
    """``(format, virtual size in bytes)`` of a local image; refuses unknown formats and backing files."""
    path = os.path.abspath(image)
    out = _run(["info", "--output=json", path], f"reading {image}", 60.0)
    try:
        facts = json.loads(out)
    except ValueError as exc:
        raise InvalidSpec(f"qemu-img could not describe {image}") from exc
    fmt = str(facts.get("format", ""))
    if fmt not in FORMATS:
        raise InvalidSpec(
            f"disk image {image} is {fmt or 'of an unknown format'}; accepted: {', '.join(FORMATS)}"
        )
    if facts.get("backing-filename") or facts.get("full-backing-filename"):
        raise InvalidSpec(
            f"disk image {image} names a backing file: flatten it first "
            "(qemu-img convert) so nothing else is read"
        )
    return fmt, int(facts.get("virtual-size", 0))


def to_vdi(image: str, dest: str, job: Job) -> int:
    """Convert ``image`` into a new VDI file ``dest``; returns the virtual size."""
    fmt, size = inspect(image)
    timeout = job.remaining(_TIMEOUT) or _TIMEOUT
    _run(
        ["convert", "-q", "-f", fmt, "-O", "vdi", os.path.abspath(image), os.path.abspath(dest)],
        f"converting {image}",
        timeout,
    )
    return size
