"""Read ahead in a thread: the next chunks of a disk are read while the last one is sent.

An upload reads a chunk, then encrypts and sends it, then reads the next: the
disk (or the decoder behind a raw view) and the network take turns. A reader
thread that stays a few chunks ahead lets both work at once. Memory stays
bounded: at most ``depth`` chunks wait in the queue.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

from anyvirt.kit.streams import CHUNK, Readable

DEPTH = 4


class ReadAhead:
    """A reader over ``raw`` whose ``read`` returns what a thread read ahead. Reads of any
    size are served from whole chunks; the source's error is raised where it is read."""

    def __init__(self, raw: Readable, *, chunk: int = CHUNK, depth: int = DEPTH) -> None:
        self._raw = raw
        self._chunk = chunk
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pending = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._fill, name="anyvirt-readahead", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._raw.read(self._chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reading side, raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1, /) -> bytes:
        if not self._pending and not self._ended:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if not item:
                self._ended = True
            self._pending = memoryview(item)
            if size is None or size < 0 or size >= len(item):
                # the whole chunk as it was read (an upload reads in chunks of the size this
                # reads ahead in): handed on as it is, not copied again
                self._pending = memoryview(b"")
                return item
        if size is None or size < 0:
            size = len(self._pending)
        out = bytes(self._pending[:size])
        self._pending = self._pending[size:]
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def read_ahead(raw: Readable, *, chunk: int = CHUNK, depth: int = DEPTH) -> Iterator[ReadAhead]:
    reader = ReadAhead(raw, chunk=chunk, depth=depth)
    try:
        yield reader
    finally:
        reader.close()


__all__ = ["ReadAhead", "read_ahead"]
