"""Random reads (``read_at``) over a platform's ranged downloads, wasting little wire.

A remote disk's bytes come as ranged downloads (libvirt's ``virStorageVolDownload``
with offset and length, an HTTP ``Range`` GET on a datastore). One download per read
costs a round trip per 128 KiB; one download of everything wastes what a seek
skips, because the server pushes the whole range at once. So reads go in windows:
after a seek the window is exactly the read asked for; it doubles, up to
``max_window``, while reads continue where the last window ended. A sequential
run costs a few round trips, metadata reads (a qcow2's tables) waste nothing, and
a run cut short wastes less than it had read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from anyvirt.errors import TaskFailed

MAX_WINDOW = 16 * 1024 * 1024


class Window(Protocol):
    """One ranged download under way."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; empty only when the download ended early."""
        ...

    def finish(self) -> None:
        """All of the window was read: end the download cleanly."""
        ...

    def abort(self) -> None:
        """Stop the download before its end (a seek, a failure)."""
        ...


class WindowedReader:
    """``read_at(offset, length)`` over ``open_window(offset, length) -> Window`` for a
    source of ``size`` bytes. Thread-safe (one read at a time); ``close()`` aborts the
    open window. ``read_bytes`` counts what the caller got. ``min_window`` is for sources
    where opening a window costs more than reading past what was asked (a process started
    over SSH): no window is smaller, and what a seek leaves unread is the price."""

    def __init__(self, open_window: Callable[[int, int], Window], size: int, what: str, *,
                 max_window: int = MAX_WINDOW, min_window: int = 0) -> None:
        self.open_window, self.size, self.what = open_window, size, what
        self.max_window, self.min_window = max_window, min_window
        self.read_bytes = 0
        self._lock = threading.Lock()
        self._window: Window | None = None
        self._at = 0  # the offset the open window delivers next
        self._left = 0  # bytes the open window still owes
        self._span = 0  # the size of the last window
        self._last: tuple[int, bytes] = (0, b"")  # the last read's offset and bytes

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TaskFailed(f"{self.what}: a read of {length} bytes at {offset} is outside "
                             f"the {self.size} there are")
        with self._lock:
            again = self._again(offset, length)
            if again is not None:
                self.read_bytes += len(again)
                return again
            start = offset
            parts: list[bytes] = []
            while length:
                if self._window is None or self._at != offset or not self._left:
                    self._open(offset, length)
                assert self._window is not None
                chunk = self._window.read(min(length, self._left, 1 << 20))
                if not chunk:
                    self.close()
                    raise TaskFailed(f"{self.what}: the download ended at byte {self._at}, "
                                     f"before the {self.size} there are")
                parts.append(chunk)
                self._at += len(chunk)
                self._left -= len(chunk)
                offset += len(chunk)
                length -= len(chunk)
                if not self._left:
                    window, self._window = self._window, None
                    window.finish()
            data = b"".join(parts)
            self.read_bytes += len(data)
            self._last = (start, data)
            return data

    def _again(self, offset: int, length: int) -> bytes | None:
        """A read inside the one before it (a reader that asks again for what it just had,
        as a FUSE view's page cache does at a boundary): from memory, not a new window."""
        start, data = self._last
        if start <= offset and offset + length <= start + len(data):
            return data[offset - start:offset - start + length]
        return None

    def _open(self, offset: int, length: int) -> None:
        running_on = self._window is None and self._at == offset
        self.close()
        self._span = min(max(self._span * 2, length), self.max_window) if running_on else length
        self._span = max(self._span, min(self.min_window, self.max_window))  # doubles from there
        span = min(self._span, self.size - offset)
        self._window = self.open_window(offset, span)
        self._at, self._left = offset, span

    def close(self) -> None:
        window, self._window = self._window, None
        if window is not None:
            window.abort()


__all__ = ["MAX_WINDOW", "Window", "WindowedReader"]
