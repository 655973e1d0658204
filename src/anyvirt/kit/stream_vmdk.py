"""A disk as a streamOptimized VMDK, encoded on the fly: zeros are never sent.

vSphere's ``ImportVApp``/HttpNfcLease path takes a disk as a streamOptimized
VMDK: VMware's sparse format laid out in stream order, each 64 KiB grain
compressed and preceded by a marker, the grain tables and directory after the
grains, and a footer holding the real header. A grain that holds no data is
simply absent, so a half-empty disk costs half the upload.

Usage (the vSphere import path)::

    from anyvirt.kit import qemu_img
    from anyvirt.kit.stream_vmdk import StreamOptimizedEncoder

    extents = image_maps.data_extents(image, "qcow2", job=job)   # what holds data
    with StreamOptimizedEncoder(raw_path, size, extents, adapter_type="lsilogic") as body:
        upload(body=MeteredReader(body, body.length, job=job), size=body.length)

``raw_path`` holds the guest-visible bytes and is read with ``os.pread`` only
where ``extents`` say there is data: a raw file, or the FUSE raw view of an
image (:mod:`anyvirt.kit.raw_view`). ``size`` is the disk size in bytes.

The API:

- ``StreamOptimizedEncoder(source, size, extents, *, adapter_type="lsilogic",
  name="disk", hw_version=4, hash_disk=False, source_size=None)``;
  ``source_size`` is the length of an image smaller than the disk it fills (the
  rest reads as zeros);
- ``.length``: the exact byte count of the stream, known before the first
  byte (an HTTP PUT needs its Content-Length);
- ``.read(n=-1) -> bytes``: the :class:`anyvirt.kit.streams.Readable` protocol;
  ``n`` bytes unless the stream ends; ``read()`` with no size returns the rest
  (the whole disk's stream: only for small disks);
- ``.rewind()``: start again from the first byte (a retried upload);
- ``.close()`` / context manager: closes the source;
- ``.grains`` (grains sent), ``.data_bytes`` (the bytes of those grains);
- ``.disk_sha256``: with ``hash_disk=True``, the sha256 of the whole
  guest-visible disk (holes hashed as the zeros they read as), set once the
  last grain has gone out (the source is closed then too): what a target's
  read-back is compared with.

Why the grains are *stored* deflate blocks, not compressed: the length must be
known before streaming, and real deflate's output size is not; random data
does not compress anyway, and storing costs no CPU. A grain costs 65536 bytes
plus 28 of framing (12 marker, 2 zlib header, 2 x 5 block headers, 4
Adler-32), padded to 129 sectors: 0.8 % over the data.

Memory: one chunk of :data:`CHUNK_GRAINS` grains (about 1 MiB), one grain
table (2 KiB), and the grain directory (4 bytes per 32 MiB of disk). Errors:
a source that ends before the extents say it does, or cannot be read, is
``TaskFailed``: the stream stops rather than send zeros in place of data.
Bad arguments (extents outside the disk, an unknown adapter type) are
``InvalidSpec`` from the constructor, before any byte is produced.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import mmap
import os
import re
import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from anyvirt.errors import InvalidSpec, TaskFailed
from anyvirt.kit import extent_digest, mapped_sources

SECTOR = 512
GRAIN_SECTORS = 128
GRAIN_SIZE = GRAIN_SECTORS * SECTOR  # 64 KiB
GTES_PER_GT = 512
GT_SPAN = GTES_PER_GT * GRAIN_SIZE  # bytes of disk one grain table covers: 32 MiB
GD_AT_END = 0xFFFF_FFFF_FFFF_FFFF
CHUNK_GRAINS = 16  # grains read per pread: about 1 MiB
READS_IN_FLIGHT = 2  # chunks read at once (see _ChunkReads)

VMDK_MAGIC = b"KDMV"
VERSION = 3
FLAG_NEWLINE_TEST = 1 << 0
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
COMPRESS_DEFLATE = 1
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3

#: ddb.adapterType values VMware knows, with the BIOS geometry (heads, sectors) each implies.
ADAPTER_TYPES: dict[str, tuple[int, int]] = {
    "ide": (16, 63),
    "buslogic": (255, 63),
    "lsilogic": (255, 63),
    "legacyESX": (255, 63),
}

# The grain as a zlib stream of stored blocks: a stored block holds at most 65535 bytes,
# so a 64 KiB grain is one full block and one of a single byte.
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, no dictionary, "fastest" level
_FIRST_BLOCK = 65535
_SECOND_BLOCK = GRAIN_SIZE - _FIRST_BLOCK
_BLOCK1_HEADER = struct.pack("<BHH", 0, _FIRST_BLOCK, _FIRST_BLOCK ^ 0xFFFF)  # not final
_BLOCK2_HEADER = struct.pack("<BHH", 1, _SECOND_BLOCK, _SECOND_BLOCK ^ 0xFFFF)  # final
_GRAIN_MARKER = struct.Struct("<QI")  # lba (sectors), compressed size
#: bytes of one grain's zlib stream: header, two block headers, the data, Adler-32
STORED_GRAIN_BYTES = len(_ZLIB_HEADER) + 2 * len(_BLOCK1_HEADER) + GRAIN_SIZE + 4
#: one grain in the stream: marker + zlib stream, padded to whole sectors
GRAIN_RECORD = -(-(_GRAIN_MARKER.size + STORED_GRAIN_BYTES) // SECTOR) * SECTOR
# where the parts of one grain record sit, from the record's start
_DATA1_AT = _GRAIN_MARKER.size + len(_ZLIB_HEADER) + len(_BLOCK1_HEADER)
_BLOCK2_AT = _DATA1_AT + _FIRST_BLOCK
_DATA2_AT = _BLOCK2_AT + len(_BLOCK2_HEADER)
_ADLER_AT = _DATA2_AT + _SECOND_BLOCK
# a grain record's framing: before its data, and after the last block's data and Adler-32
_GRAIN_HEAD = _ZLIB_HEADER + _BLOCK1_HEADER
_GRAIN_PAD = bytes(GRAIN_RECORD - _ADLER_AT - 4)
_ADLER = struct.Struct(">I")
GRAIN_RECORD_SECTORS = GRAIN_RECORD // SECTOR
GT_SECTORS = GTES_PER_GT * 4 // SECTOR
_MAX_SECTOR = 0xFFFF_FFFF  # grain tables hold uint32 sector numbers

_HEADER = struct.Struct("<4sIIQQQQIQQQBccccH")
_METADATA_MARKER = struct.Struct("<QII")  # sectors that follow, 0, type
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def grain_runs(extents: Iterable[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The grains ``[first, end)`` that overlap ``extents``, merged and sorted.

    ``extents`` are ``(offset, length)`` byte ranges of a disk of ``size`` bytes
    (any order, overlapping allowed); zero-length ones hold nothing.
    """
    limit = -(-size // SECTOR) * SECTOR
    runs: list[tuple[int, int]] = []
    for offset, length in sorted(extents):
        if not isinstance(offset, int) or not isinstance(length, int):
            raise InvalidSpec(f"data extent ({offset!r}, {length!r}) is not two integers")
        if offset < 0 or length < 0 or offset + length > limit:
            raise InvalidSpec(f"data extent ({offset}, {length}) is outside the "
                              f"{size}-byte disk")
        if length == 0:
            continue
        first, end = offset // GRAIN_SIZE, -(-(offset + length) // GRAIN_SIZE)
        if runs and first <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(end, runs[-1][1]))
        else:
            runs.append((first, end))
    return runs


def _by_table(runs: Sequence[tuple[int, int]]) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """The runs cut at grain-table boundaries: (table index, its runs), tables in order."""
    table: int | None = None
    parts: list[tuple[int, int]] = []
    for first, end in runs:
        while first < end:
            here = first // GTES_PER_GT
            stop = min(end, (here + 1) * GTES_PER_GT)
            if here != table:
                if table is not None:
                    yield table, parts
                table, parts = here, []
            parts.append((first, stop))
            first = stop
    if table is not None:
        yield table, parts


def _geometry(sectors: int, adapter_type: str) -> tuple[int, int, int]:
    heads, per_track = ADAPTER_TYPES[adapter_type]
    limit = 16383 if adapter_type == "ide" else 65535
    return max(1, min(limit, sectors // (heads * per_track))), heads, per_track


def _le32(values: array[int]) -> bytes:
    if sys.byteorder == "big":
        values = array("I", values)
        values.byteswap()
    return values.tobytes()


class StreamOptimizedEncoder:
    """A readable stream: the disk at ``source`` as a streamOptimized VMDK (see the module)."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        size: int,
        extents: Iterable[tuple[int, int]],
        *,
        adapter_type: str = "lsilogic",
        name: str = "disk",
        hw_version: int = 4,
        hash_disk: bool = False,
        source_size: int | None = None,
        layout: Sequence[tuple[int, int, int]] | None = None,
    ) -> None:
        if not isinstance(size, int) or size <= 0:
            raise InvalidSpec(f"disk size must be a positive number of bytes, not {size!r}")
        if adapter_type not in ADAPTER_TYPES:
            raise InvalidSpec(f"adapter type {adapter_type!r} is not one of "
                              f"{', '.join(ADAPTER_TYPES)}")
        if not _NAME.match(name):
            raise InvalidSpec(f"VMDK extent name {name!r}: letters, digits, '.', '_', '-' only")
        if not isinstance(hw_version, int) or not 3 <= hw_version <= 99:
            raise InvalidSpec(f"virtual hardware version {hw_version!r} is not valid")
        self.source = os.fspath(source)
        self.size = size
        # an image smaller than the disk it fills (a disk grown on import): past its end the
        # disk reads as zeros, never as whatever follows in the source
        self.source_size = size if source_size is None else min(size, source_size)
        # ``layout``: the source is an image file (an uncompressed qcow2) whose guest bytes
        # sit at known places, (guest offset, length, file offset) in guest order, as
        # ``qemu_img.host_layout`` reads them: read there directly, no decoder in between;
        # guest bytes outside it read as zeros
        self.layout = _checked_layout(layout, size) if layout is not None else None
        self.capacity = -(-size // SECTOR)  # sectors
        self.runs = grain_runs(extents, size)
        self.grains = sum(end - first for first, end in self.runs)
        self.data_bytes = self.grains * GRAIN_SIZE
        self.tables = -(-self.capacity // (GTES_PER_GT * GRAIN_SECTORS))
        self.present_tables = sum(1 for _ in _by_table(self.runs))
        self.gd_sectors = max(1, -(-self.tables * 4 // SECTOR))
        self._descriptor = self._describe(adapter_type, name, hw_version)
        self.overhead = 1 + len(self._descriptor) // SECTOR  # the sector the first grain starts at
        self.gd_offset = (self.overhead + self.grains * GRAIN_RECORD_SECTORS
                          + self.present_tables * (1 + GT_SECTORS) + 1)
        sectors = self.gd_offset + self.gd_sectors + 3  # + footer marker, footer, end of stream
        if sectors > _MAX_SECTOR:
            raise InvalidSpec(f"a {size}-byte disk is too large for one streamOptimized VMDK")
        self.length = sectors * SECTOR
        self.hash_disk = hash_disk
        self.disk_sha256: str | None = None
        self._fd: int | None = None
        self._mapped: mapped_sources.MappedSource | None = None
        self._pieces: Iterator[memoryview | bytes] = iter(())
        self._piece: memoryview = memoryview(b"")
        self.rewind()

    # ------------------------------------------------------------------ the stream
    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if not self._piece:
            self._piece = memoryview(next(self._pieces, b""))
        if len(self._piece) >= size or not self._piece:
            taken = bytes(self._piece[:size])  # a copy: the chunk buffer is reused
            self._piece = self._piece[len(taken):]
            return taken
        # a read across pieces is copied once, straight into what is returned (not each
        # part copied and then joined: the upload's 1 MiB reads straddle the ~1 MiB chunks
        # of grain records, so that was about two copies of every byte)
        out = bytearray(size)
        filled = 0
        while filled < size:
            if not self._piece:
                self._piece = memoryview(next(self._pieces, b""))
                if not self._piece:
                    del out[filled:]
                    break
            take = min(len(self._piece), size - filled)
            out[filled: filled + take] = self._piece[:take]
            self._piece = self._piece[take:]
            filled += take
        return out  # type: ignore[return-value]  # bytes-like, and not copied again

    def rewind(self) -> None:
        """Start the stream again from its first byte."""
        self._pieces = self._generate()
        self._piece = memoryview(b"")
        self.disk_sha256 = None

    def close(self) -> None:
        self._pieces = iter(())
        self._piece = memoryview(b"")
        self._close_source()

    def _close_source(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StreamOptimizedEncoder:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"StreamOptimizedEncoder({self.source!r}, size={self.size}, grains={self.grains}, "
                f"length={self.length})")

    # ------------------------------------------------------------------ the parts
    def _describe(self, adapter_type: str, name: str, hw_version: int) -> bytes:
        cylinders, heads, per_track = _geometry(self.capacity, adapter_type)
        # a fixed CID (it only has to differ from a parent's, and there is none)
        cid = zlib.crc32(f"{name}:{self.size}".encode()) or 1
        text = "\n".join([
            "# Disk DescriptorFile",
            "version=1",
            "encoding=\"UTF-8\"",
            f"CID={cid:08x}",
            "parentCID=ffffffff",
            "createType=\"streamOptimized\"",
            "",
            "# Extent description",
            f"RW {self.capacity} SPARSE \"{name}.vmdk\"",
            "",
            "# The Disk Data Base",
            "#DDB",
            "",
            f"ddb.adapterType = \"{adapter_type}\"",
            f"ddb.geometry.cylinders = \"{cylinders}\"",
            f"ddb.geometry.heads = \"{heads}\"",
            f"ddb.geometry.sectors = \"{per_track}\"",
            f"ddb.virtualHWVersion = \"{hw_version}\"",
            "",
        ]).encode("ascii")
        return text + bytes(-len(text) % SECTOR)

    def _header(self, gd_offset: int) -> bytes:
        packed = _HEADER.pack(
            VMDK_MAGIC, VERSION, FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
            self.capacity, GRAIN_SECTORS, 1, len(self._descriptor) // SECTOR, GTES_PER_GT,
            0, gd_offset, self.overhead, 0, b"\n", b" ", b"\r", b"\n", COMPRESS_DEFLATE)
        return packed + bytes(SECTOR - len(packed))

    @staticmethod
    def _marker(sectors: int, kind: int) -> bytes:
        packed = _METADATA_MARKER.pack(sectors, 0, kind)
        return packed + bytes(SECTOR - len(packed))

    def _generate(self) -> Iterator[memoryview | bytes]:
        """The stream in pieces; a yielded memoryview is valid until the next piece."""
        hasher = hashlib.sha256() if self.hash_disk else None
        hashed = 0  # disk bytes hashed so far
        # a verification that wants the source's data ranges hashed as they are read
        # (a disk streamed from afar, not to be read a second time for its digest)
        tap = extent_digest.tap_for(self.source)
        if tap is not None:
            tap.begin()
        # a raw view whose server knows where its data sits: read there, past the decoder
        # (:mod:`anyvirt.kit.mapped_sources`); the view's own layout is then the identity
        self._mapped = mapped_sources.source_for(self.source)
        yield self._header(GD_AT_END) + self._descriptor
        directory = array("I", bytes(4 * self.tables))
        table = array("I", bytes(4 * GTES_PER_GT))
        sector = self.overhead
        if self.runs:
            self._open()  # here, not in the readers: one of them would race the other
        with _ChunkReads(self._fill) as reads:
            reads.start((start, min(CHUNK_GRAINS, end - start))
                        for _table, runs in _by_table(self.runs) for first, end in runs
                        for start in range(first, end, CHUNK_GRAINS))
            for index, runs in _by_table(self.runs):
                for i in range(GTES_PER_GT):
                    table[i] = 0
                for first, end in runs:
                    for start in range(first, end, CHUNK_GRAINS):
                        count = min(CHUNK_GRAINS, end - start)
                        records, data = reads.next()
                        for k in range(count):
                            table[start + k - index * GTES_PER_GT] = (
                                sector + k * GRAIN_RECORD_SECTORS)
                        sector += count * GRAIN_RECORD_SECTORS
                        # the digests take the chunk's guest bytes as read, in one piece (not
                        # two slices of every grain record, one of them a single byte)
                        if hasher is not None:
                            hashed = _hash_chunk(hasher, data, start, count, hashed, self.size)
                        if tap is not None:
                            _feed(tap, data, start, count)
                        yield from records
                yield self._marker(GT_SECTORS, MARKER_GT)
                directory[index] = sector + 1
                sector += 1 + GT_SECTORS
                yield _le32(table)
        assert sector + 1 == self.gd_offset
        # the disk is read: done with the source before the last few sectors go out, so a
        # consumer that stops at the declared length finds the digest set and the file closed
        self._close_source()
        if tap is not None:
            tap.end()
        if hasher is not None:
            _hash_zeros(hasher, hashed, self.size)
            self.disk_sha256 = hasher.hexdigest()
        entries = _le32(directory)
        yield (self._marker(self.gd_sectors, MARKER_GD)
               + entries + bytes(self.gd_sectors * SECTOR - len(entries))
               + self._marker(1, MARKER_FOOTER) + self._header(self.gd_offset)
               + bytes(SECTOR))  # the end-of-stream marker

    def _open(self) -> int:
        if self._fd is None:
            flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
            if _is_fuse_mount(self.source):
                flags |= getattr(os, "O_DIRECT", 0)
            try:
                self._fd = os.open(self.source, flags)
            except OSError as exc:
                raise TaskFailed(f"reading disk {self.source}: {exc.strerror or exc}") from exc
        return self._fd

    def _fill(self, staging: memoryview, start: int,
              count: int) -> tuple[list[memoryview | bytes], memoryview]:
        """Grains ``start .. start+count`` read through ``staging`` (a page-aligned buffer
        of a chunk: one contiguous read, which a raw view serves as one request): their
        records as pieces of the stream, and the guest bytes read (shorter than the grains
        where the source ends: zeros follow). Both are valid while ``staging`` is not
        reused. The records' data is not copied here: the pieces view it where it was read,
        between framing of a few bytes, and the stream's reader copies it once."""
        fd = self._open()
        offset = start * GRAIN_SIZE
        expected = max(0, min(count * GRAIN_SIZE, self.source_size - offset))
        data = staging[:expected]
        if self._mapped is not None:
            data = self._mapped.read(offset, data)
        elif self.layout is not None:
            self._fill_mapped(fd, data, offset)
        else:
            got = _read_into(fd, [data], offset, expected, self.source)
            if got < expected:
                raise TaskFailed(f"reading disk {self.source}: it ends at byte {offset + got}, "
                                 f"but its map says data reaches byte {offset + expected}")
        pieces: list[memoryview | bytes] = []
        for k in range(count):
            at = k * GRAIN_SIZE
            grain: memoryview | bytes = data[at: at + GRAIN_SIZE]
            if len(grain) < GRAIN_SIZE:  # past the disk's (or image's) end: zeros
                grain = bytes(grain) + bytes(GRAIN_SIZE - len(grain))
            pieces.append(_GRAIN_MARKER.pack((start + k) * GRAIN_SECTORS, STORED_GRAIN_BYTES)
                          + _GRAIN_HEAD)
            pieces.append(grain[:_FIRST_BLOCK])
            pieces.append(_BLOCK2_HEADER + grain[_FIRST_BLOCK:]
                          + _ADLER.pack(zlib.adler32(grain)) + _GRAIN_PAD)
        return pieces, data

    def _fill_mapped(self, fd: int, data: memoryview, offset: int) -> None:
        """Guest bytes ``offset .. offset+len(data)`` through the layout into ``data``: the
        mapped pieces read from their file offsets, the rest zeros."""
        assert self.layout is not None
        done = 0  # data is filled (read or zeroed) up to here
        for guest, length, host in _pieces(self.layout, offset, offset + len(data)):
            data[done: guest - offset] = bytes(guest - offset - done)
            part = data[guest - offset: guest - offset + length]
            if _read_into(fd, [part], host, length, self.source) != length:
                raise TaskFailed(f"reading disk {self.source}: it ends before byte "
                                 f"{host + length}, where its map puts guest data")
            done = guest - offset + length
        data[done:] = bytes(len(data) - done)


def _is_fuse_mount(path: str) -> bool:
    """Whether ``path`` is a FUSE file mounted on itself (the kit's raw view of an image).

    Such a file is read with ``O_DIRECT``: through the page cache the kernel cuts every
    read into 128 KiB requests to the FUSE server (eight round trips through the whole
    chain behind a view for each 1 MiB chunk); direct, a chunk is one request (measured
    on a remote daemon's view: 512 MiB cost this process 0.6 s of CPU instead of
    0.9-1.0 s, the NBD relay answering 512 requests instead of 4096). FUSE takes direct
    reads at any alignment; the buffer is page-aligned so the request is not split."""
    target = os.fsencode(os.path.realpath(path))
    try:
        with open("/proc/self/mounts", "rb") as mounts:
            for line in mounts:
                fields = line.split()
                if fields[1:2] == [target] and fields[2:3] and fields[2].startswith(b"fuse"):
                    return True
    except OSError:
        pass
    return False


#: one chunk read: its grain records as pieces of the stream, and its guest bytes
_Chunk = tuple[list[memoryview | bytes], memoryview]


class _ChunkReads:
    """The grain chunks of a stream read ahead, :data:`READS_IN_FLIGHT` at a time, each
    into a staging buffer of its own, handed out in stream order by :meth:`next`.

    Why: a raw view answers each read through a chain of servers (FUSE,
    ``qemu-storage-daemon``, an NBD relay, a remote daemon); one reader waiting on each
    read leaves the other links idle while one works, and reads in flight keep them
    busy where cores are free. (On a machine whose 2 cores were already saturated, the
    encoder read a remote view's 512 MiB in the same time either way, 2.3 s median,
    with 6 % less CPU: there it is the CPU, not the waiting, that bounds it.) A buffer
    handed out (the chunk's record pieces and guest bytes) stays valid until the next
    call: it is filled again only after that."""

    def __init__(self, fill: Callable[[memoryview, int, int], _Chunk]) -> None:
        self._fill = fill
        self._chunks: Iterator[tuple[int, int]] = iter(())
        self._staging = [memoryview(mmap.mmap(-1, CHUNK_GRAINS * GRAIN_SIZE))
                         for _ in range(READS_IN_FLIGHT + 1)]  # page-aligned
        self._turn = 0  # the buffer the next chunk submitted goes into
        self._pending: collections.deque[Future[_Chunk]] = collections.deque()
        self._pool = ThreadPoolExecutor(READS_IN_FLIGHT, thread_name_prefix="anyvirt-vmdk-read")

    def start(self, chunks: Iterable[tuple[int, int]]) -> None:
        self._chunks = iter(chunks)
        for _ in range(READS_IN_FLIGHT):
            self._submit()

    def _submit(self) -> None:
        chunk = next(self._chunks, None)
        if chunk is None:
            return
        start, count = chunk
        staging = self._staging[self._turn]
        self._turn = (self._turn + 1) % len(self._staging)
        self._pending.append(self._pool.submit(self._fill, staging, start, count))

    def next(self) -> _Chunk:
        """The next chunk's grain records (pieces of the stream) and its guest bytes."""
        chunk = self._pending.popleft().result()
        self._submit()  # into the buffer handed out before this one: it is consumed
        return chunk

    def __enter__(self) -> _ChunkReads:
        return self

    def __exit__(self, *exc: object) -> None:
        # an early end (an error, a closed or rewound stream): reads under way finish
        # before the source is closed under them
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


def _checked_layout(layout: Sequence[tuple[int, int, int]],
                    size: int) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    end = 0
    for guest, length, host in layout:
        if guest < end or length <= 0 or host < 0 or guest + length > size:
            raise InvalidSpec(f"layout piece ({guest}, {length}, {host}) is out of order or "
                              f"outside the {size}-byte disk")
        out.append((guest, length, host))
        end = guest + length
    return out


def _pieces(layout: Sequence[tuple[int, int, int]], start: int,
            end: int) -> Iterator[tuple[int, int, int]]:
    """The parts of ``layout`` inside guest bytes ``start .. end``, as (guest, length, host)."""
    index = max(0, bisect.bisect_right(layout, (start, float("inf"), 0)) - 1)
    for guest, length, host in layout[index:]:
        if guest >= end:
            return
        low, high = max(guest, start), min(guest + length, end)
        if low < high:
            yield low, high - low, host + (low - guest)


def _read_into(fd: int, slots: list[memoryview], offset: int, wanted: int, what: str) -> int:
    """Fill ``slots`` in order from ``offset`` with up to ``wanted`` bytes; the count read.

    Fewer than ``wanted`` only at the end of the file (a FUSE read may also come back
    short: it is read again from where it stopped)."""
    views: list[memoryview] = []
    left = wanted
    for slot in slots:
        if left <= 0:
            break
        views.append(slot[: min(len(slot), left)])
        left -= len(views[-1])
    done = 0
    while views:
        try:
            got = os.preadv(fd, views[:1024], offset + done)
        except OSError as exc:
            raise TaskFailed(f"reading disk {what} at byte {offset + done}: "
                             f"{exc.strerror or exc}") from exc
        if got == 0:
            break
        done += got
        while views and got >= len(views[0]):
            got -= len(views[0])
            views.pop(0)
        if got:
            views[0] = views[0][got:]
    return done


def _feed(tap: extent_digest.OutboundDigest, data: memoryview, start: int, count: int) -> None:
    """Hand the guest bytes of grains ``start .. start+count`` to ``tap``: ``data`` as read,
    then zeros where the source ended before the grains do (the disk reads zeros there)."""
    at = start * GRAIN_SIZE
    tap.add(at, data)
    rest = count * GRAIN_SIZE - len(data)
    if rest > 0:
        tap.add(at + len(data), _ZEROS[:rest])


_ZEROS = memoryview(bytes(CHUNK_GRAINS * GRAIN_SIZE))


def _hash_zeros(hasher: hashlib._Hash, hashed: int, upto: int) -> int:
    while hashed < upto:
        step = min(len(_ZEROS), upto - hashed)
        hasher.update(_ZEROS[:step])
        hashed += step
    return hashed


def _hash_chunk(hasher: hashlib._Hash, data: memoryview, start: int, count: int, hashed: int,
                size: int) -> int:
    """Hash the disk from byte ``hashed`` to the end of grains ``start .. start+count`` (not
    past the disk's end): zeros up to the chunk, ``data``, zeros where the source ended."""
    at = start * GRAIN_SIZE
    hashed = _hash_zeros(hasher, hashed, at)
    take = min(len(data), size - at)
    hasher.update(data[:take])
    return _hash_zeros(hasher, hashed + take, min(at + count * GRAIN_SIZE, size))


__all__ = [
    "ADAPTER_TYPES",
    "GRAIN_RECORD",
    "GRAIN_SIZE",
    "SECTOR",
    "StreamOptimizedEncoder",
    "grain_runs",
]
