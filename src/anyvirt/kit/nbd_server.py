"""A read-only NBD server on a private UNIX socket, over any ``read_at`` a backend has.

Why: a disk that sits on another machine (a remote libvirt daemon's volume, read by
``virStorageVolDownload`` ranges) must reach a target's import without a staging copy.
QEMU's block layer reads NBD, so serving the remote file's bytes as an NBD export
lets ``qemu-storage-daemon`` decode it (qcow2, a linked clone's whole chain) into a
raw view (:mod:`anyvirt.kit.raw_view`) that every import already reads. Only the
ranges QEMU asks for cross the wire: the metadata, then the data clusters.

The protocol part is the fixed-newstyle handshake with ``NBD_OPT_GO``/``INFO``,
``EXPORT_NAME``, ``LIST`` and ``ABORT``, and simple replies to ``READ`` and ``DISC``
(RFC: the NBD protocol document, doc/proto.md of the NBD project). An export that
knows where its zeros are (``Export.status``) is also served with structured replies
and the ``base:allocation`` meta context: QEMU then asks ``BLOCK_STATUS``, its raw view
answers ``SEEK_DATA``/``SEEK_HOLE``, and an import never reads the holes (zeros are
answered as holes, without their bytes, when read anyway). Everything else is refused
with an error code; nothing is ever written. The socket lives in a 0700
directory of its own, so only this user's processes reach it.

QEMU keeps several requests of one connection in flight (qemu-img convert: 8). An export
whose ``read_at`` may run in several threads at once (``Export.concurrency``) has them
answered by that many threads, each reply sent whole as soon as it is ready, so out of
request order (the protocol matches replies by handle); others are answered one at a
time, in order, as a ``read_at`` written for one reader expects.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import attrs
from attrs import frozen

from anyvirt.errors import AnyvirtError
from anyvirt.kit.nbd_protocol import (
    CMD_BLOCK_STATUS,
    CMD_DISC,
    CMD_READ,
    CMD_TRIM,
    CMD_WRITE,
    CMD_WRITE_ZEROES,
    EINVAL,
    EIO,
    EPERM,
    FLAG_FIXED_NEWSTYLE,
    FLAG_NO_ZEROES,
    IHAVEOPT,
    INFO_EXPORT,
    MAX_READ,
    NBDMAGIC,
    OPT_ABORT,
    OPT_EXPORT_NAME,
    OPT_GO,
    OPT_INFO,
    OPT_LIST,
    OPT_LIST_META_CONTEXT,
    OPT_REPLY_MAGIC,
    OPT_SET_META_CONTEXT,
    OPT_STRUCTURED_REPLY,
    REP_ACK,
    REP_ERR_INVALID,
    REP_ERR_UNKNOWN,
    REP_ERR_UNSUP,
    REP_INFO,
    REP_META_CONTEXT,
    REP_SERVER,
    REPLY_BLOCK_STATUS,
    REPLY_ERROR,
    REPLY_FLAG_DONE,
    REPLY_OFFSET_DATA,
    REPLY_OFFSET_HOLE,
    REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC,
    STATE_HOLE,
    STATE_ZERO,
    STRUCTURED_REPLY_MAGIC,
    TRANSMISSION_HAS_FLAGS,
    TRANSMISSION_READ_ONLY,
)

TRANSMISSION_FLAGS = TRANSMISSION_HAS_FLAGS | TRANSMISSION_READ_ONLY
SECTOR = 512
BASE_ALLOCATION = b"base:allocation"
CONTEXT_ID = 1  # the one meta context served: base:allocation
CMD_FLAG_REQ_ONE = 8
#: ``status(offset, length)``: ``(length, zero)`` runs from ``offset`` on, in order
Status = Callable[[int, int], Sequence[tuple[int, bool]]]
#: bytes as a reader holds them: a view of a decoded chunk goes out without a copy
Data = bytes | bytearray | memoryview
#: requests of one connection read ahead of the ones being answered (each holds its reply
#: in memory until it is sent: up to this many replies of up to MAX_READ, per worker)
QUEUED_PER_WORKER = 2
#: buffers handed to one sendmsg (the kernel takes at most IOV_MAX, 1024, at once)
IOV_BATCH = 512


@frozen
class Export:
    """One export: ``size`` bytes, read by ``read_at(offset, length)`` (exactly ``length``
    bytes or an exception). The advertised size is rounded up to whole sectors (QEMU
    wants them); the tail past ``size`` reads as zeros."""

    size: int
    read_at: Callable[[int, int], Data]
    #: where the zeros are, if the export knows: runs of ``(length, zero)`` from
    #: ``offset`` on (covering at least one byte of the range; zero runs read as zeros)
    status: Status | None = None
    #: requests of one connection answered at once. Above 1, ``read_at`` and ``status``
    #: run in that many threads together (the export must allow it)
    concurrency: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    #: reads are cut at multiples of this (0: never), each piece read on its own and sent
    #: as it is, never joined: an export of decoded chunks answers a read that spans two
    #: of them from the two chunks, with no buffer assembled
    piece_size: int = attrs.field(default=0, validator=attrs.validators.ge(0))


class NbdServer:
    """Serves ``exports`` by name on ``self.socket_path`` until closed (a context manager).
    A read that fails answers ``EIO`` and is recorded in ``self.errors``: the QEMU reading
    fails its read, and the caller raises the first recorded error as the cause."""

    def __init__(self, exports: Mapping[str, Export]) -> None:
        self.exports = dict(exports)
        self.errors: list[BaseException] = []
        self.bytes_served = 0
        self._dir = tempfile.TemporaryDirectory(prefix="anyvirt-nbd-")
        os.chmod(self._dir.name, 0o700)
        self.socket_path = Path(self._dir.name) / "nbd.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.socket_path))
        self._listener.listen(8)
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="anyvirt-nbd", daemon=True)
        self._thread.start()

    def __enter__(self) -> NbdServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for client in self._clients:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._dir.cleanup()

    def raise_first_error(self) -> None:
        """Raise what made a read fail, if one did (an ``AnyvirtError`` as it is)."""
        if self.errors:
            raise self.errors[0]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError, EOFError), client:
            session = _Session()
            export = self._handshake(client, session)
            if export is not None:
                self._transmit(client, export, session)

    def _offers_status(self) -> bool:
        # only then structured replies: a server of plain exports answers as it always has
        return any(e.status is not None for e in self.exports.values())

    def _handshake(self, client: socket.socket, session: _Session) -> Export | None:
        client.sendall(NBDMAGIC + struct.pack(">QH", IHAVEOPT,
                                              FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        (flags,) = struct.unpack(">I", _recv(client, 4))
        while True:
            magic, option, length = struct.unpack(">QII", _recv(client, 16))
            if magic != IHAVEOPT or length > 65536:
                return None
            data = _recv(client, length)
            if option == OPT_EXPORT_NAME:
                export = self.exports.get(data.decode("utf-8", "replace"))
                if export is None:
                    return None  # the protocol's only answer to an unknown name here
                zeros = b"" if flags & FLAG_NO_ZEROES else bytes(124)
                client.sendall(struct.pack(">QH", _advertised(export), TRANSMISSION_FLAGS) + zeros)
                return export
            if option in (OPT_INFO, OPT_GO):
                (size,) = struct.unpack(">I", data[:4])
                export = self.exports.get(data[4:4 + size].decode("utf-8", "replace"))
                if export is None:
                    _reply(client, option, REP_ERR_UNKNOWN)
                    continue
                _reply(client, option, REP_INFO, struct.pack(">HQH", INFO_EXPORT,
                                                             _advertised(export),
                                                             TRANSMISSION_FLAGS))
                _reply(client, option, REP_ACK)
                if option == OPT_GO:
                    return export
            elif option == OPT_LIST:
                for name in self.exports:
                    raw = name.encode()
                    _reply(client, option, REP_SERVER, struct.pack(">I", len(raw)) + raw)
                _reply(client, option, REP_ACK)
            elif option == OPT_ABORT:
                _reply(client, option, REP_ACK)
                return None
            elif option == OPT_STRUCTURED_REPLY and self._offers_status() and not data:
                session.structured = True
                _reply(client, option, REP_ACK)
            elif option in (OPT_SET_META_CONTEXT, OPT_LIST_META_CONTEXT) and session.structured:
                self._meta_context(client, option, data, session)
            else:
                _reply(client, option, REP_ERR_UNSUP)

    def _meta_context(self, client: socket.socket, option: int, data: bytes,
                      session: _Session) -> None:
        """Answer a SET or LIST of meta contexts: ``base:allocation`` where the export
        knows its zeros, nothing else."""
        try:
            name, queries = _parse_meta_query(data)
        except (struct.error, ValueError):
            _reply(client, option, REP_ERR_INVALID)
            return
        export = self.exports.get(name)
        if export is None:
            _reply(client, option, REP_ERR_UNKNOWN)
            return
        # an empty LIST asks for every context; an empty SET selects none
        wanted = any(q in (b"base:", BASE_ALLOCATION) for q in queries) or (
            option == OPT_LIST_META_CONTEXT and not queries)
        selected = wanted and export.status is not None
        if selected:
            _reply(client, option, REP_META_CONTEXT,
                   struct.pack(">I", CONTEXT_ID) + BASE_ALLOCATION)
        if option == OPT_SET_META_CONTEXT:
            session.allocation = selected
        _reply(client, option, REP_ACK)

    def _transmit(self, client: socket.socket, export: Export, session: _Session) -> None:
        replies = _Replies(client)
        with _Answering(export.concurrency) as answering:
            while True:
                magic, flags, kind, handle, offset, length = struct.unpack(">IHHQQI",
                                                                          _recv(client, 28))
                if magic != REQUEST_MAGIC or kind == CMD_DISC:
                    return  # after the requests in flight are answered (leaving the block)
                request = _Request(flags, kind, handle, offset, length)
                answering.run(functools.partial(self._reply, replies, export, session, request),
                              functools.partial(self._broken, client))

    def _reply(self, replies: _Replies, export: Export, session: _Session,
               request: _Request) -> None:
        replies.send(self._answer(export, session, request))

    def _broken(self, client: socket.socket, error: BaseException) -> None:
        """A request whose answer failed beyond an error reply (a bug, not a failed read):
        kept as the cause, and the connection ended, as a one-at-a-time server's thread
        ends it by dying, so the client is never left waiting for that reply."""
        if not isinstance(error, OSError):  # OSError: the client went away; nothing to tell
            self.errors.append(error)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)

    def _answer(self, export: Export, session: _Session, request: _Request) -> list[Data]:
        """The whole reply to one request, read before any of it goes out: a failed read
        is one error reply, never a half-sent one."""
        handle, offset, length = request.handle, request.offset, request.length
        advertised = _advertised(export)
        kind = request.kind
        if kind == CMD_BLOCK_STATUS and session.allocation and export.status is not None:
            if length == 0 or offset + length > advertised:
                return [_error(handle, EINVAL, session)]
            try:
                runs = _status(export, offset, length, bool(request.flags & CMD_FLAG_REQ_ONE))
            except (AnyvirtError, OSError) as error:
                self.errors.append(error)
                return [_error(handle, EIO, session)]
            return [_chunk(REPLY_FLAG_DONE, REPLY_BLOCK_STATUS, handle,
                           struct.pack(">I", CONTEXT_ID) + b"".join(
                               struct.pack(">II", n, STATE_HOLE | STATE_ZERO if zero else 0)
                               for n, zero in runs))]
        if kind != CMD_READ:
            code = EPERM if kind in (CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES) else EINVAL
            return [_error(handle, code, session)]
        if length > MAX_READ or offset + length > advertised:
            return [_error(handle, EINVAL, session)]
        try:
            if session.structured:
                reply = _structured_read(export, handle, offset, length)
            else:
                reply = [struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, handle),
                         *_read(export, offset, length)]
        except (AnyvirtError, OSError) as error:
            self.errors.append(error)
            return [_error(handle, EIO, session)]
        with self._lock:
            self.bytes_served += length
        return reply


@frozen
class _Request:
    flags: int
    kind: int
    handle: int
    offset: int
    length: int


class _Replies:
    """One connection's sending side: each reply goes out whole, never interleaved with
    another thread's."""

    def __init__(self, client: socket.socket) -> None:
        self._client = client
        self._lock = threading.Lock()

    def send(self, buffers: list[Data]) -> None:
        with self._lock:
            _send(self._client, buffers)


class _Answering:
    """Runs one connection's answers: in the receiving thread one after another, or, for
    an export that allows it, in a few threads while the next requests are received
    (bounded, so a client cannot queue unbounded work). Leaving waits for every answer."""

    def __init__(self, concurrency: int) -> None:
        self._pool = (ThreadPoolExecutor(concurrency, thread_name_prefix="anyvirt-nbd-answer")
                      if concurrency > 1 else None)
        self._slots = threading.BoundedSemaphore(QUEUED_PER_WORKER * concurrency)

    def __enter__(self) -> _Answering:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def run(self, answer: Callable[[], None],
            broken: Callable[[BaseException], None]) -> None:
        if self._pool is None:
            answer()  # its failures end the connection, as they always have
            return

        def guarded() -> None:
            try:
                answer()
            except Exception as error:  # passed on: the connection ends
                broken(error)
            finally:
                self._slots.release()

        self._slots.acquire()
        self._pool.submit(guarded)


def _structured_read(export: Export, handle: int, offset: int, length: int) -> list[Data]:
    """One read as structured chunks: zero runs as holes (no bytes), data as data."""
    runs = _status(export, offset, length, False) if export.status is not None else [
        (length, False)]
    parts: list[tuple[int, bytes, list[Data]]] = []  # (type, payload head, data pieces)
    at = offset
    for n, zero in runs:
        if zero:
            parts.append((REPLY_OFFSET_HOLE, struct.pack(">QI", at, n), []))
        else:
            parts.append((REPLY_OFFSET_DATA, struct.pack(">Q", at), _read(export, at, n)))
        at += n
    buffers: list[Data] = []
    for index, (kind, head, pieces) in enumerate(parts):
        flags = REPLY_FLAG_DONE if index == len(parts) - 1 else 0
        size = len(head) + sum(len(piece) for piece in pieces)
        buffers += [struct.pack(">IHHQI", STRUCTURED_REPLY_MAGIC, flags, kind, handle, size)
                    + head, *pieces]
    return buffers


@attrs.define
class _Session:
    """What one client negotiated."""

    structured: bool = False
    allocation: bool = False


def _parse_meta_query(data: bytes) -> tuple[str, list[bytes]]:
    (size,) = struct.unpack_from(">I", data, 0)
    name = data[4:4 + size].decode("utf-8", "replace")
    at = 4 + size
    (count,) = struct.unpack_from(">I", data, at)
    at += 4
    queries = []
    for _ in range(count):
        (n,) = struct.unpack_from(">I", data, at)
        queries.append(data[at + 4:at + 4 + n])
        at += 4 + n
    if at != len(data):
        raise ValueError("trailing bytes in a meta context query")
    return name, queries


def _status(export: Export, offset: int, length: int, one: bool) -> list[tuple[int, bool]]:
    """The export's runs over exactly [offset, offset+length), merged, clipped; past its
    size (the sector padding) zeros."""
    assert export.status is not None
    runs: list[tuple[int, bool]] = []
    inside = max(0, min(length, export.size - offset))
    at, end = offset, offset + inside
    while at < end:
        got = list(export.status(at, end - at))
        if not got or got[0][0] <= 0:
            raise OSError(f"no block status at {at}")
        for n, zero in got:
            n = min(n, end - at)
            if n <= 0:
                break
            if runs and runs[-1][1] == zero:
                runs[-1] = (runs[-1][0] + n, zero)
            else:
                runs.append((n, zero))
            at += n
    if length > inside:
        if runs and runs[-1][1]:
            runs[-1] = (runs[-1][0] + length - inside, True)
        else:
            runs.append((length - inside, True))
    return runs[:1] if one else runs


def _chunk(flags: int, kind: int, handle: int, payload: bytes) -> bytes:
    return struct.pack(">IHHQI", STRUCTURED_REPLY_MAGIC, flags, kind, handle,
                       len(payload)) + payload


def _error(handle: int, code: int, session: _Session) -> bytes:
    if session.structured:
        return _chunk(REPLY_FLAG_DONE, REPLY_ERROR, handle, struct.pack(">IH", code, 0))
    return struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, code, handle)


def _advertised(export: Export) -> int:
    return -(-export.size // SECTOR) * SECTOR


def _read(export: Export, offset: int, length: int) -> list[Data]:
    """``length`` bytes at ``offset`` as pieces to send one after another (cut at the
    export's piece size; past its end, zeros)."""
    inside = max(0, min(length, export.size - offset))
    pieces: list[Data] = []
    at, end, step = offset, offset + inside, export.piece_size
    while at < end:
        upto = min(end, (at // step + 1) * step) if step else end
        data = export.read_at(at, upto - at)
        if len(data) != upto - at:
            raise OSError(f"read {len(data)} of {upto - at} bytes at {at}")
        pieces.append(data)
        at = upto
    if length > inside:
        pieces.append(bytes(length - inside))
    return pieces


def _send(client: socket.socket, buffers: list[Data]) -> None:
    """Send ``buffers`` in order without joining them (a read's data is not copied again)."""
    views = [memoryview(b) for b in buffers if b]
    while views:
        sent = client.sendmsg(views[:IOV_BATCH])
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]


def _reply(client: socket.socket, option: int, kind: int, data: bytes = b"") -> None:
    client.sendall(struct.pack(">QIII", OPT_REPLY_MAGIC, option, kind, len(data)) + data)


def _recv(client: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        chunk = client.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


@contextlib.contextmanager
def serving(exports: Mapping[str, Export]) -> Iterator[NbdServer]:
    with NbdServer(exports) as server:
        yield server


__all__ = ["Export", "NbdServer", "serving"]
