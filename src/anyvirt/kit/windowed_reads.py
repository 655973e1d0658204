"""Random reads (``read_at``) over a platform's ranged downloads, wasting little wire.

A remote disk's bytes come as ranged downloads (libvirt's ``virStorageVolDownload``
with offset and length, an HTTP ``Range`` GET on a datastore). One download per read
costs a round trip per 128 KiB; one download of everything wastes what a seek
skips, because the server pushes the whole range at once. So reads go in windows:
after a seek the window is exactly the read asked for; it doubles, up to
``max_window``, while reads continue where the last window ended. A sequential
run costs a few round trips, metadata reads (a qcow2's tables) waste nothing, and
a run cut short wastes less than it had read.

Readers that keep several reads in flight (an import reading a raw view two chunks
at a time, through ``qemu-storage-daemon`` and an NBD server) ask out of order now
and then: the chunk after next before the next. Where the server pushes a window
whole whatever happens to it (libvirt's streams), aborting the window there wasted
the rest of it, up to ``max_window``, on the wire (a linked clone's 11 MiB once took
12.4 MiB). A short forward seek inside the open window is read through instead
(``read_through``), and what it skipped is kept for the read that comes late; a
read that starts inside the last one (a page cache asking again, a reader widening
its read) takes that part from memory and goes on with the window.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Protocol

from anyvirt.errors import TaskFailed

MAX_WINDOW = 16 * 1024 * 1024
#: reads this small are remembered (``remember``): an image's tables, not its data
SMALL_READ = 64 * 1024


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


class IntoWindow(Window, Protocol):
    """A window that can also receive straight into a buffer (no bytes object per piece)."""

    def readinto(self, buffer: memoryview, /) -> int:
        """Up to ``len(buffer)`` bytes into ``buffer``; 0 only when the download ended early."""
        ...


class WindowedReader:
    """``read_at(offset, length)`` over ``open_window(offset, length) -> Window`` for a
    source of ``size`` bytes. Thread-safe (one read at a time); ``close()`` aborts the
    open window. ``read_bytes`` counts what the caller got. ``min_window`` is for sources
    where opening a window costs more than reading past what was asked (a process started
    over SSH): no window is smaller, and what a seek leaves unread is the price.
    ``read_through``: a seek forward of at most this many bytes inside the open window
    reads the gap rather than abort the window, and keeps it (at most that much) for a
    read that asks for it later; for sources that send a window whole even when it is
    aborted, where the gap costs no wire that an abort would not. ``remember``: small
    reads (:data:`SMALL_READ` at most) are kept, up to this many bytes, the least recent
    dropped first, for a reader that asks again (an image's tables, read by the map of a
    chain and again by the decoder of its view)."""

    def __init__(self, open_window: Callable[[int, int], Window], size: int, what: str, *,
                 max_window: int = MAX_WINDOW, min_window: int = 0,
                 read_through: int = 0, remember: int = 0) -> None:
        self.open_window, self.size, self.what = open_window, size, what
        self.max_window, self.min_window = max_window, min_window
        self.read_through, self.remember = read_through, remember
        self.read_bytes = 0
        self._lock = threading.Lock()
        self._window: Window | None = None
        self._at = 0  # the offset the open window delivers next
        self._left = 0  # bytes the open window still owes
        self._span = 0  # the size of the last window
        self._last: tuple[int, bytes] = (0, b"")  # the last read's offset and bytes
        # bytes a seek read through, by offset (oldest first), not yet asked for
        self._kept: dict[int, memoryview] = {}
        self._kept_bytes = 0
        # small reads already answered, by offset, least recent first
        self._small: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._small_bytes = 0

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TaskFailed(f"{self.what}: a read of {length} bytes at {offset} is outside "
                             f"the {self.size} there are")
        with self._lock:
            start = offset
            # the answer is assembled where it is returned: a window that can receive into
            # it puts the bytes there directly (a libvirt stream delivers 256 KiB packets:
            # they were each a bytes object, then joined, two copies of every byte more)
            out = bytearray(length)
            view = memoryview(out)
            while length:
                done = offset - start
                known = self._known(offset, length)
                if known is not None:
                    view[done: done + len(known)] = known
                    offset += len(known)
                    length -= len(known)
                    continue
                if self._window is None or self._at != offset or not self._left:
                    if not self._read_through(offset):
                        self._open(offset, length)
                    continue
                got = self._next_into(view[done: done + min(length, self._left)])
                offset += got
                length -= got
            view.release()
            data: bytes = out  # type: ignore[assignment]  # never changed once returned
            self.read_bytes += len(data)
            self._last = (start, data)
            if 0 < len(data) <= min(SMALL_READ, self.remember):
                self._remember(start, data)
            return data

    def _remember(self, offset: int, data: bytes) -> None:
        old = self._small.pop(offset, None)
        self._small_bytes += len(data) - (len(old) if old is not None else 0)
        self._small[offset] = data
        while self._small_bytes > self.remember:
            _at, dropped = self._small.popitem(last=False)
            self._small_bytes -= len(dropped)

    def _next(self, size: int) -> bytes:
        """Up to ``size`` bytes from the open window, finished once it is all read."""
        assert self._window is not None
        chunk = self._window.read(size)
        if not chunk:
            self.close()
            raise TaskFailed(f"{self.what}: the download ended at byte {self._at}, "
                             f"before the {self.size} there are")
        self._advance(len(chunk))
        return chunk

    def _next_into(self, buffer: memoryview) -> int:
        """Bytes from the open window into ``buffer`` (as many as come at once), the window
        finished once it is all read."""
        assert self._window is not None
        readinto = getattr(self._window, "readinto", None)
        if readinto is None:
            chunk = self._next(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)
        got = int(readinto(buffer))
        if not got:
            self.close()
            raise TaskFailed(f"{self.what}: the download ended at byte {self._at}, "
                             f"before the {self.size} there are")
        self._advance(got)
        return got

    def _advance(self, got: int) -> None:
        """``got`` bytes came from the open window: finished once it is all read."""
        assert self._window is not None
        self._at += got
        self._left -= got
        if not self._left:
            window, self._window = self._window, None
            window.finish()

    def _known(self, offset: int, length: int) -> memoryview | None:
        """The bytes from ``offset`` on that are in memory (up to ``length``): in the last
        read (a reader that asks again for what it just had, as a FUSE view's page cache
        does at a boundary, or widens it), in a small read remembered, or read through by
        a seek (then taken out)."""
        start, data = self._last
        if start <= offset < start + len(data):
            return memoryview(data)[offset - start:offset - start + length]
        if self._small:
            for at, small in self._small.items():
                if at <= offset < at + len(small):
                    self._small.move_to_end(at)
                    return memoryview(small)[offset - at:offset - at + length]
        for at, kept in self._kept.items():
            if at <= offset < at + len(kept):
                del self._kept[at]
                self._kept_bytes -= len(kept)
                piece = kept[offset - at:offset - at + length]
                rest = offset + len(piece)
                if rest < at + len(kept):
                    self._keep(rest, kept[rest - at:])
                return piece
        return None

    def _read_through(self, offset: int) -> bool:
        """Whether the open window was read up to ``offset`` (a short seek forward inside
        it), what it skipped kept."""
        gap = offset - self._at
        if self._window is None or not 0 < gap <= min(self._left, self.read_through):
            return False
        while self._at < offset:
            at = self._at
            self._keep(at, memoryview(self._next(min(offset - at, 1 << 20))))
        return True

    def _keep(self, offset: int, data: memoryview) -> None:
        while self._kept and self._kept_bytes + len(data) > self.read_through:
            oldest = next(iter(self._kept))
            self._kept_bytes -= len(self._kept.pop(oldest))
        self._kept[offset] = data
        self._kept_bytes += len(data)

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


__all__ = ["MAX_WINDOW", "SMALL_READ", "IntoWindow", "Window", "WindowedReader"]
