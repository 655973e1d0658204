"""A restore point's disks as image files a target's import reads, with no staged copy.

Why: a restore used to write every disk out of its chunks into a temporary raw file,
then hand that to the import: a full copy of the disk on the local disk, and a stage
that had to end before the import began. Here each disk is served instead as an NBD
export (:mod:`anyvirt.kit.nbd_server`) whose reads are assembled from the chunks, and
``qemu-storage-daemon`` turns the exports into read-only raw files over FUSE
(:mod:`anyvirt.kit.raw_view`). The import reads those while the chunks are decoded:
fetched, decompressed and checked against their names in a small pool a few chunks
ahead of the (sequential) reader, with a bounded cache. Zero chunks answer zeros without
work. Memory stays bounded by the window, never the disk. An import that converts with
the kit's qemu-img (libvirt's) reads the export itself instead of the file (the kit
records which export each view shows): its requests in flight are answered together,
each from the decoded chunks as they are, where FUSE passed them one at a time through
the daemon, a copy and a round trip more per MiB.

Where no raw view can be made here (no qemu-storage-daemon, no FUSE), the disks are
written into sparse temporary files first, as before: the pool's workers fetch, check
and ``pwrite`` each chunk themselves.

A chunk that fails its check fails the read that needed it (the import sees EIO);
:meth:`DiskImages.reraise` then raises the chunk's own error (``InvalidSpec``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from anyvirt.errors import InvalidSpec, NotSupported, StorageFull
from anyvirt.kit import nbd_server, raw_view, streams
from anyvirt.repository.pipeline import WINDOW, WORKERS, pipeline
from anyvirt.tasks import Job

#: chunks decoded ahead of the reader
READ_AHEAD = WINDOW
#: chunks kept decoded (memory: this many chunks): the read-ahead of readers a few
#: chunks apart (qemu-img convert reads 8 requests of up to 2 MiB at once)
CACHED = 4 * READ_AHEAD
#: an import's requests answered at once (qemu-img keeps 8 in flight): reads wait for
#: their chunks' decoding in the pool and are assembled while other requests are decoded
ANSWERING = 2 * WORKERS


class ChunkedDisk:
    """One disk's guest bytes, ``read_at`` any range, assembled from its chunks.

    ``fetch(n)`` returns chunk ``n``'s checked bytes (it runs in ``pool``); a chunk id of
    None is a chunk of zeros. A read of chunk ``n`` starts the decoding of the next
    ``READ_AHEAD`` chunks, so a sequential reader finds them ready."""

    def __init__(self, ids: Sequence[str | None], size: int, chunk_size: int,
                 fetch: Callable[[int], bytes], pool: ThreadPoolExecutor) -> None:
        if len(ids) != -(-size // chunk_size):
            raise InvalidSpec(f"an index of {len(ids)} chunks does not describe a disk of "
                              f"{size} bytes")
        self.size, self.chunk_size = size, chunk_size
        self._ids = list(ids)
        self._fetch, self._pool = fetch, pool
        self._cache: collections.OrderedDict[int, Future[bytes]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def read_at(self, offset: int, length: int) -> nbd_server.Data:
        """Bytes ``[offset, offset+length)``: within one chunk a view of the decoded chunk
        (no copy: it is sent as it is), across chunks one buffer assembled once."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InvalidSpec(f"a read of {length} bytes at {offset} is outside the disk")
        size = self.chunk_size
        first, last = offset // size, (offset + length - 1) // size
        if first == last:  # the reader asks for a chunk or less
            data = self._chunk(first)
            if data is None:
                return bytes(length)
            start = offset - first * size
            return memoryview(data)[start:start + length]
        out = bytearray(length)
        for n in range(first, last + 1):
            data = self._chunk(n)
            if data is None:
                continue  # already zeros
            lo, hi = max(offset, n * size), min(offset + length, (n + 1) * size)
            out[lo - offset:hi - offset] = memoryview(data)[lo - n * size:hi - n * size]
        return out

    def status(self, offset: int, length: int) -> list[tuple[int, bool]]:
        """Runs of ``(length, zero)`` from ``offset``: the zero chunks, known from the index
        alone (the NBD export's ``base:allocation``, so an import skips them)."""
        size, end = self.chunk_size, min(offset + length, self.size)
        runs: list[tuple[int, bool]] = []
        at = offset
        while at < end:
            n = at // size
            upto = min((n + 1) * size, end)
            zero = self._ids[n] is None
            if runs and runs[-1][1] == zero:
                runs[-1] = (runs[-1][0] + upto - at, zero)
            else:
                runs.append((upto - at, zero))
            at = upto
        return runs

    def _chunk(self, n: int) -> bytes | None:
        with self._lock:
            wanted = self._start(n)
            for ahead in range(n + 1, min(n + 1 + READ_AHEAD, len(self._ids))):
                self._start(ahead)
            # least recently used out first: an import reads with several requests in
            # flight (qemu-img: 8), so "behind the reader" is not one place. Dropped, not
            # cancelled: another reader of the export may be waiting for it right now
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)
        return wanted.result() if wanted is not None else None

    def _start(self, n: int) -> Future[bytes] | None:
        if self._ids[n] is None:
            return None
        future = self._cache.get(n)
        if future is None:
            future = self._cache[n] = self._pool.submit(self._fetch, n)
        else:
            self._cache.move_to_end(n)
        return future


class DiskImages:
    """The image files of a restore's disks, while the block of :func:`disk_images` lasts."""

    def __init__(self, paths: list[Path], server: nbd_server.NbdServer | None) -> None:
        self.paths = paths
        self.streamed = server is not None
        self._server = server

    def failed_read(self) -> BaseException | None:
        """What made a read of the chunks fail, if one did."""
        return self._server.errors[0] if self._server is not None and self._server.errors else None

    def reraise(self, failure: BaseException) -> None:
        """Raise the chunk's own error when a failed read is why the import failed."""
        cause = self.failed_read()
        if cause is not None and not isinstance(failure, GeneratorExit):
            raise cause from failure


@contextlib.contextmanager
def disk_images(disks: Sequence[tuple[Sequence[str | None], int]], chunk_size: int,
                fetch: Callable[[str], bytes], job: Job) -> Iterator[DiskImages]:
    """Image files (raw) of ``disks`` (their chunk ids and sizes in bytes): streamed raw
    views where this machine can make them, else sparse temporary files written first.
    ``fetch(chunk_id)`` returns a chunk's checked bytes or raises ``InvalidSpec``."""

    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="anyvirt-restore")
    try:
        with contextlib.ExitStack() as stack:
            chunked = [ChunkedDisk(ids, size, chunk_size,
                                   checked_chunks(ids, size, chunk_size, fetch), pool)
                       for ids, size in disks]
            try:
                images = _streamed(stack, chunked, job)
            except NotSupported:
                images = None  # no raw views here: the temporary files below
            if images is not None:
                try:
                    yield images
                except BaseException as failure:
                    images.reraise(failure)
                    raise
                return
    finally:
        # what was read ahead and never asked for is not decoded any more
        pool.shutdown(wait=True, cancel_futures=True)
    with _staged(disks, chunk_size, fetch, job) as staged:
        yield staged


def _streamed(stack: contextlib.ExitStack, disks: list[ChunkedDisk], job: Job) -> DiskImages:
    """The disks served over NBD and viewed as raw files, for as long as ``stack`` is open;
    raises NotSupported where raw views cannot be made here."""
    exports = {f"disk{n}": nbd_server.Export(size=d.size, read_at=d.read_at,
                                             status=d.status, concurrency=ANSWERING,
                                             piece_size=d.chunk_size)
               for n, d in enumerate(disks)}
    server = stack.enter_context(nbd_server.NbdServer(exports))
    paths = [stack.enter_context(raw_view.raw_view_of_nbd_chain(
                 server.socket_path, [(f"disk{n}", "raw")], d.size, job=job))
             for n, d in enumerate(disks)]
    return DiskImages(paths, server)


@contextlib.contextmanager
def _staged(disks: Sequence[tuple[Sequence[str | None], int]], chunk_size: int,
            fetch: Callable[[str], bytes], job: Job) -> Iterator[DiskImages]:
    with tempfile.TemporaryDirectory(prefix="anyvirt-restore-") as tmp:
        need = sum(sum(1 for c in ids if c) for ids, _ in disks) * chunk_size
        free = shutil.disk_usage(tmp).free
        if need > free:
            raise StorageFull(f"restoring needs up to {streams.human(need)} of temporary "
                              f"space in {tmp}, {streams.human(free)} is free")
        paths = []
        for n, (ids, size) in enumerate(disks):
            image = Path(tmp) / f"disk{n}.raw"
            write_disk(ids, size, chunk_size, fetch, image, job)
            paths.append(image)
        yield DiskImages(paths, None)


def checked_chunks(ids: Sequence[str | None], size: int, chunk_size: int,
                   fetch: Callable[[str], bytes]) -> Callable[[int], bytes]:
    """``fetch`` by chunk number, each chunk's length checked against the disk's size."""
    def one(n: int) -> bytes:
        chunk_id = ids[n]
        assert chunk_id is not None, "zero chunks are never fetched"
        data = fetch(chunk_id)
        if len(data) != min(chunk_size, size - n * chunk_size):
            raise InvalidSpec(f"chunk {n} of the disk holds {len(data)} bytes, not the "
                              "chunk size")
        return data
    return one


def write_disk(ids: Sequence[str | None], size: int, chunk_size: int,
               fetch: Callable[[str], bytes], image: Path, job: Job) -> None:
    """Disk ``ids`` into a new sparse raw file ``image``: zeros are holes, never written.
    The pool's workers fetch, check and write each chunk (``pwrite`` releases the GIL)."""
    if len(ids) != -(-size // chunk_size):
        raise InvalidSpec(f"an index of {len(ids)} chunks does not describe a disk of "
                          f"{size} bytes")
    chunk = checked_chunks(ids, size, chunk_size, fetch)
    with open(image, "wb") as handle:
        handle.truncate(size)
        fd = handle.fileno()

        def put(n: int, _: None) -> None:
            os.pwrite(fd, chunk(n), n * chunk_size)

        present = [n for n, chunk_id in enumerate(ids) if chunk_id]
        for done, (n, _) in enumerate(pipeline(present, lambda _n: None, put), 1):
            job.check()
            job.progress(100.0 * done / max(len(present), 1), f"restoring chunk {n + 1}")


__all__ = ["ChunkedDisk", "DiskImages", "checked_chunks", "disk_images", "write_disk"]
