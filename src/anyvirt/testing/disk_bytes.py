"""Disk contents for tests that back up, restore or move real bytes.

One home for the core's tests and the backends' tests alike (they import
``anyvirt.testing`` the same way), so every suite writes the same kind of data.
"""

from __future__ import annotations

import random


def pattern(seed: int, size: int) -> bytes:
    """Reproducible bytes that compress a little (like real disks), unlike os.urandom:
    runs drawn from a small vocabulary of random words, so chunks differ by seed."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(4, 40)) for _ in range(512)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])
