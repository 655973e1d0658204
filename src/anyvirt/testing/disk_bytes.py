"""Disk contents for tests that back up, restore or move real bytes.

One home for the core's tests and the backends' tests alike (they import
``anyvirt.testing`` the same way), so every suite writes the same kind of data.
"""

from __future__ import annotations

import random
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anyvirt.host import Host

MIB = 1024 * 1024


def pattern(seed: int, size: int) -> bytes:
    """Reproducible bytes that compress a little (like real disks), unlike os.urandom:
    runs drawn from a small vocabulary of random words, so chunks differ by seed."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(4, 40)) for _ in range(512)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


def raw_disk_that_looks_like_qcow2(workdir: Path) -> bytes:
    """An 8 MiB raw guest disk whose guest wrote a complete qcow2 image (no backing file,
    64 KiB of 0xab) at offset 0, and a pattern at 4 MiB: what an import that probes the
    format, instead of taking the one it was given, takes for that inner image. The qcow2
    is made by the real ``qemu-img`` and ``qemu-io`` in ``workdir``."""
    inner = workdir / f"inner-{uuid.uuid4().hex[:8]}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "--", str(inner), "1M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64k", "--", str(inner)],
                   check=True, capture_output=True)
    header = inner.read_bytes()
    inner.unlink()
    disk = bytearray(8 * MIB)
    disk[:len(header)] = header
    disk[4 * MIB:5 * MIB] = pattern(41, MIB)
    return bytes(disk)


def flip_memory_disk_byte(target: Host, vm_name: str, offset: int) -> str:
    """Change one byte (at ``offset``) of the first disk of ``vm_name`` on a memory:// host,
    as a copy gone wrong would; returns the disk's id. For tests that prove a move's
    verification catches a copy that differs."""
    copy = target.vms.get(vm_name)
    disk = copy.info().disks[0].id
    fmt, data = copy.native.contents[disk]
    changed = bytearray(data)
    changed[offset] ^= 0xFF
    copy.native.contents[disk] = (fmt, bytes(changed))
    return disk
