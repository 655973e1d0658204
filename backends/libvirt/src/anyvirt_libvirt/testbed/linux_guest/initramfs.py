"""A gzip-compressed ``newc`` cpio archive, the initramfs format Linux unpacks at boot.

Written here rather than with ``cpio``: every entry is owned by root with
fixed times, so the same inputs give the same bytes, and no tool is needed.
"""

from __future__ import annotations

import gzip
import stat

from attrs import frozen

__all__ = ["Entry", "directory", "file", "initramfs", "symlink"]


@frozen
class Entry:
    """One archive member: ``path`` without a leading slash."""

    path: str
    mode: int
    data: bytes = b""


def directory(path: str) -> Entry:
    return Entry(path, stat.S_IFDIR | 0o755)


def file(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _member(ino: int, entry: Entry) -> bytes:
    name = entry.path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, 0, 0, len(name), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    return header + name + _pad4(len(header) + len(name)) + entry.data + _pad4(len(entry.data))


def initramfs(entries: list[Entry]) -> bytes:
    """The compressed archive of ``entries`` (parents before children, as the kernel needs)."""
    body = b"".join(_member(ino, entry) for ino, entry in enumerate(entries, start=1))
    body += _member(0, Entry("TRAILER!!!", 0))
    return gzip.compress(body, compresslevel=6, mtime=0)
