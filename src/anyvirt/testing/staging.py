"""Whether a streamed move or restore staged a copy: the largest file under a temporary
directory, watched while the work runs.

One home for the core's tests and the backends' tests alike, so every "no staging copy"
assertion measures the same thing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def largest_file(where: Path) -> int:
    """The most disk any regular file under ``where`` takes, allocated or apparent (FUSE
    views excluded: a raw view is a mount point whose bytes live elsewhere, not a file
    anything wrote)."""
    mounts = {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()}
    largest = 0
    for root, _dirs, files in os.walk(where):
        for name in files:
            path = os.path.join(root, name)
            if path in mounts:
                continue
            with contextlib.suppress(FileNotFoundError):
                found = os.lstat(path)
                if stat.S_ISREG(found.st_mode):
                    largest = max(largest, found.st_blocks * 512, found.st_size)
    return largest
