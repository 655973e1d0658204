"""Moving disk-sized byte streams: chunked, counted, hashed, with progress, in bounded memory.

Disk images go over HTTP, out of tar archives and between files. Every such
copy must (a) hold one chunk at a time, never the file; (b) show progress
(bytes, percent, rate) on the caller's Task; (c) stop on cancel and at the
deadline; (d) end with exactly the declared number of bytes: a stream that
ends early or runs long is an error, never padded or cut quietly, because
either means the disk is not the one that was meant; (e) give the sha256 of
what went through, computed on the way, so nobody reads the disk twice.

Two shapes, one :class:`Meter` behind both: :func:`copy` pushes a reader into
a writer; :class:`MeteredReader` is a file object for consumers that pull
(``http.client`` reading a request body).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import time
from pathlib import Path
from typing import Protocol

from attrs import frozen

from anyvirt.errors import AnyvirtError, TaskFailed
from anyvirt.tasks import Job

CHUNK = 1024 * 1024
PROGRESS_EVERY = 0.5  # seconds between progress reports: a report per chunk floods callbacks


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class SparseWritable(Writable, Protocol):
    """A writer that can leave holes: a regular file opened for writing."""

    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def tell(self) -> int: ...
    def truncate(self, size: int | None = ..., /) -> int: ...


@frozen
class Transfer:
    """What went through: byte count, sha256 (hex; empty for a stream only counted) and time."""

    bytes: int
    sha256: str
    seconds: float

    @property
    def rate(self) -> float:
        """Bytes per second."""
        return self.bytes / self.seconds if self.seconds > 0 else float(self.bytes)


def human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class Meter:
    """Counts, hashes and reports the bytes of one stream as they pass.

    ``size`` is the declared length (None when unknown: then no percent and no
    length check). ``span`` maps this stream onto part of the job's progress
    (disk 2 of 4: ``(25, 50)``). ``error`` is the class raised on a wrong
    length or checksum: ``TaskFailed`` for a platform's stream, ``InvalidSpec``
    for a user's archive.
    """

    def __init__(
        self,
        size: int | None,
        *,
        job: Job | None = None,
        what: str = "copying",
        span: tuple[float, float] = (0.0, 100.0),
        error: type[AnyvirtError] = TaskFailed,
        hashed: bool = True,
    ) -> None:
        if size is not None and size < 0:
            raise ValueError(f"a declared size cannot be negative ({size})")
        self.size = size
        self.job = job
        self.what = what
        self.span = span
        self.error = error
        self.count = 0
        # ``hashed=False``: a stream nobody compares by digest (an encoding of the disk, not
        # the disk) is only counted; hashing it would cost CPU the transfer needs
        self._hash = hashlib.sha256() if hashed else None
        self._started = time.monotonic()
        self._reported = self._started

    @property
    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.count

    def add(self, chunk: bytes | bytearray | memoryview) -> None:
        """Account for ``chunk``; raises when it runs past the declared size or the job stops."""
        self.count += len(chunk)
        if self.size is not None and self.count > self.size:
            raise self.error(f"{self.what}: the stream is longer than the declared "
                             f"{self.size} bytes")
        if self._hash is not None:
            self._hash.update(chunk)
        now = time.monotonic()
        if self.job is not None:
            self.job.check()
            if now - self._reported >= PROGRESS_EVERY:
                self._reported = now
                self.report(now)

    def report(self, now: float | None = None) -> None:
        if self.job is None:
            return
        elapsed = (now or time.monotonic()) - self._started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        done = human(self.count)
        if self.size:
            fraction = self.count / self.size
            low, high = self.span
            self.job.progress(low + (high - low) * fraction,
                              f"{self.what}: {done} of {human(self.size)}, {human(rate)}/s")
        else:
            self.job.progress(None, f"{self.what}: {done}, {human(rate)}/s")

    def finish(self, expected_sha256: str | None = None) -> Transfer:
        """The stream ended: check its length (and checksum) and report the end."""
        if self.size is not None and self.count != self.size:
            raise self.error(f"{self.what}: the stream ended after {self.count} of the declared "
                             f"{self.size} bytes")
        digest = self._hash.hexdigest() if self._hash is not None else ""
        if expected_sha256 is not None and self._hash is None:
            raise ValueError("a stream metered with hashed=False has no sha256 to check")
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise self.error(f"{self.what}: sha256 {digest} does not match the expected "
                             f"{expected_sha256}")
        self.report()
        return Transfer(bytes=self.count, sha256=digest, seconds=time.monotonic() - self._started)


def copy(
    reader: Readable,
    writer: Writable | SparseWritable,
    *,
    size: int | None,
    job: Job | None = None,
    what: str = "copying",
    span: tuple[float, float] = (0.0, 100.0),
    sparse: bool = False,
    expected_sha256: str | None = None,
    error: type[AnyvirtError] = TaskFailed,
    chunk_size: int = CHUNK,
) -> Transfer:
    """Copy ``reader`` into ``writer`` chunk by chunk; exactly ``size`` bytes (when given).

    ``sparse``: the writer is a fresh seekable file whose unwritten parts read
    as zeros; chunks of zeros are skipped by seeking, so a mostly empty disk
    stays mostly holes. The file ends at the last byte either way.
    """
    meter = Meter(size, job=job, what=what, span=span, error=error)
    holes = _sparse(writer) if sparse else None
    zeros = bytes(chunk_size) if holes is not None else b""
    skipped = False
    while True:
        left = meter.remaining
        want = chunk_size if left is None else min(chunk_size, left)
        if want == 0:
            # the declared size is through: one more byte means the source runs long
            if reader.read(1):
                raise error(f"{what}: the stream is longer than the declared {size} bytes")
            break
        chunk = reader.read(want)
        if not chunk:
            break
        meter.add(chunk)
        if holes is not None and chunk == zeros[: len(chunk)]:
            holes.seek(len(chunk), os.SEEK_CUR)
            skipped = True
            continue
        writer.write(chunk)
    result = meter.finish(expected_sha256)
    if holes is not None and skipped:
        # a trailing hole has no byte written after it: the length must be set
        holes.truncate(holes.tell())
    return result


def _sparse(writer: Writable | SparseWritable) -> SparseWritable | None:
    """The writer as a file that can hold holes, or None (a socket, a tar stream)."""
    fileno = getattr(writer, "fileno", None)
    if fileno is None or not all(hasattr(writer, m) for m in ("seek", "tell", "truncate")):
        return None
    try:
        regular = stat.S_ISREG(os.fstat(fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return writer if regular else None  # type: ignore[return-value]


def copy_to_file(
    reader: Readable,
    destination: str | os.PathLike[str],
    *,
    size: int | None,
    job: Job | None = None,
    what: str = "copying",
    span: tuple[float, float] = (0.0, 100.0),
    expected_sha256: str | None = None,
    error: type[AnyvirtError] = TaskFailed,
    overwrite: bool = False,
) -> Transfer:
    """:func:`copy` into a new file (sparse); a partial file is removed when the copy fails.
    An existing file is an error (``FileExistsError``) unless ``overwrite``."""
    path = Path(destination)
    out = path.open("wb" if overwrite else "xb")  # opened before the try: never unlink another's file
    try:
        with out:
            return copy(reader, out, size=size, job=job, what=what, span=span, sparse=True,
                        expected_sha256=expected_sha256, error=error)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


class MeteredReader(io.RawIOBase):
    """A file object over ``raw`` that meters what a consumer pulls (an HTTP upload body).

    It never hands out more than ``size`` bytes, and raises when ``raw`` ends
    early or has bytes left over: a request whose Content-Length was promised
    must not go out short or be cut to fit.
    """

    def __init__(
        self,
        raw: Readable,
        size: int,
        *,
        job: Job | None = None,
        what: str = "sending",
        span: tuple[float, float] = (0.0, 100.0),
        error: type[AnyvirtError] = TaskFailed,
        hashed: bool = True,
    ) -> None:
        super().__init__()
        self.raw = raw
        self.meter = Meter(size, job=job, what=what, span=span, error=error, hashed=hashed)
        self.transfer: Transfer | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        left = self.meter.remaining
        assert left is not None
        if left == 0:
            if self.transfer is None:
                if self.raw.read(1):
                    raise self.meter.error(f"{self.meter.what}: the stream is longer than the "
                                           f"declared {self.meter.size} bytes")
                self.transfer = self.meter.finish()
            return b""
        want = left if size is None or size < 0 else min(size, left)
        # the last chunk reads one byte ahead: a source that runs long is refused before the
        # consumer has sent the declared length (which the other end would take as complete)
        chunk = self.raw.read(want + 1 if want == left else want)
        if not chunk:
            self.meter.finish()  # raises: shorter than declared
        self.meter.add(chunk)
        return chunk

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)


__all__ = ["CHUNK", "Meter", "MeteredReader", "Transfer", "copy", "copy_to_file", "human"]
