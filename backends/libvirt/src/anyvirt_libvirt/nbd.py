"""A small NBD client: the dirty extents of a bitmap, and reads, from a QEMU NBD export.

Why our own: QEMU publishes a disk's dirty bitmap only over NBD (``qemu-nbd -B``
for an image file, the backup job's export for a running VM), as the block
status meta context ``qemu:dirty-bitmap:NAME``. Debian's ``nbdinfo`` reads it,
but is one more system package and prints text meant for people; the few
requests needed here (fixed newstyle handshake, structured replies, one meta
context, ``NBD_CMD_BLOCK_STATUS`` and ``NBD_CMD_READ``) are a page of code
(protocol: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md).

Everything the server sends is data: lengths are bounded and checked before
anything is allocated, and any surprise is a :class:`NBDError`, never a guess.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Iterator

from anyvirt.errors import TaskFailed
from anyvirt.kit.nbd_protocol import (
    CMD_BLOCK_STATUS,
    CMD_DISC,
    CMD_READ,
    FLAG_FIXED_NEWSTYLE,
    FLAG_NO_ZEROES,
    IHAVEOPT,
    INFO_EXPORT,
    NBDMAGIC,
    OPT_GO,
    OPT_REPLY_MAGIC,
    OPT_SET_META_CONTEXT,
    OPT_STRUCTURED_REPLY,
    REP_ACK,
    REP_INFO,
    REP_META_CONTEXT,
    REPLY_BLOCK_STATUS,
    REPLY_ERROR_BIT,
    REPLY_FLAG_DONE,
    REPLY_NONE,
    REPLY_OFFSET_DATA,
    REPLY_OFFSET_HOLE,
    REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC,
    STRUCTURED_REPLY_MAGIC,
)

MAX_OPTION_REPLY = 64 * 1024  # a meta context name or an export's info: small
MAX_READ = 32 * 1024 * 1024  # the reads asked here are chunk-sized
STATUS_SPAN = 1 << 30  # one block status request covers at most 1 GiB (servers may say less)


class NBDError(TaskFailed):
    """The NBD server refused a request or said something that is not NBD."""


class Client:
    """One connection to one export, opened with one meta context (or none)."""

    def __init__(self, sock_path: str, export: str = "", contexts: tuple[str, ...] = (),
                 timeout: float = 60.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._handle = 0
        self.contexts: dict[str, int] = {}  # meta context name -> the server's id for it
        try:
            self._sock.connect(sock_path)
            self.size = self._handshake(export.encode(), contexts)
        except BaseException:
            self._sock.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_request(CMD_DISC, 0, 0)
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ handshake
    def _handshake(self, export: bytes, contexts: tuple[str, ...]) -> int:
        head = self._recv(18)
        if head[:8] != NBDMAGIC or struct.unpack(">Q", head[8:16])[0] != IHAVEOPT:
            raise NBDError("the server does not speak NBD's newstyle handshake")
        (flags,) = struct.unpack(">H", head[16:18])
        if not flags & FLAG_FIXED_NEWSTYLE:
            raise NBDError("the NBD server lacks the fixed newstyle handshake")
        self._sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES)))
        self._option(OPT_STRUCTURED_REPLY, b"")
        if self._reply(OPT_STRUCTURED_REPLY)[0] != REP_ACK:
            raise NBDError("the NBD server refuses structured replies")
        if contexts:
            queries = [c.encode() for c in contexts]
            body = b"".join(struct.pack(">I", len(q)) + q for q in queries)
            self._option(OPT_SET_META_CONTEXT, struct.pack(">I", len(export)) + export
                         + struct.pack(">I", len(queries)) + body)
            while True:
                kind, data = self._reply(OPT_SET_META_CONTEXT)
                if kind == REP_ACK:
                    break
                if kind == REP_META_CONTEXT and len(data) >= 4 and data[4:] in queries:
                    self.contexts[data[4:].decode()] = struct.unpack(">I", data[:4])[0]
            missing = set(contexts) - set(self.contexts)
            if missing:
                raise NBDError(f"the NBD export has no {sorted(missing)[0]!r}")
        self._option(OPT_GO, struct.pack(">I", len(export)) + export + struct.pack(">H", 0))
        size = None
        while True:
            kind, data = self._reply(OPT_GO)
            if kind == REP_ACK:
                break
            if kind == REP_INFO and len(data) >= 12 and struct.unpack(">H", data[:2])[0] == INFO_EXPORT:
                (size,) = struct.unpack(">Q", data[2:10])
        if size is None:
            raise NBDError("the NBD server did not give the export's size")
        return int(size)

    def _option(self, option: int, data: bytes) -> None:
        self._sock.sendall(struct.pack(">QII", IHAVEOPT, option, len(data)) + data)

    def _reply(self, option: int) -> tuple[int, bytes]:
        magic, got, kind, length = struct.unpack(">QIII", self._recv(20))
        if magic != OPT_REPLY_MAGIC or got != option or length > MAX_OPTION_REPLY:
            raise NBDError("the NBD server's option reply is malformed")
        data = self._recv(length)
        if kind & 0x80000000:
            text = data.decode("utf-8", "replace")[:200]
            raise NBDError(f"the NBD server refused option {option} (error {kind & 0x7FFFFFFF}"
                           f"{': ' + text if text else ''})")
        return kind, data

    # ------------------------------------------------------------ transmission
    def dirty(self, context: str) -> list[tuple[int, int]]:
        """The ranges a ``qemu:dirty-bitmap`` context marks dirty (flag bit 0)."""
        return self.ranges(context, lambda flags: bool(flags & 1))

    def data(self) -> list[tuple[int, int]]:
        """The ranges ``base:allocation`` calls neither a hole nor zeros (flags 0)."""
        return self.ranges("base:allocation", lambda flags: not flags & 3)

    def ranges(self, context: str, wanted: Callable[[int], bool]) -> list[tuple[int, int]]:
        """The ``(offset, length)`` ranges of the export whose block status flags in
        ``context`` are ``wanted``, in order, adjacent ones merged."""
        context_id = self.contexts.get(context)
        if context_id is None:
            raise NBDError(f"meta context {context!r} was not asked for")
        runs: list[tuple[int, int]] = []
        offset = 0
        while offset < self.size:
            handle = self._send_request(CMD_BLOCK_STATUS, offset,
                                        min(STATUS_SPAN, self.size - offset))
            at = offset
            for kind, payload in self._replies(handle):
                if kind != REPLY_BLOCK_STATUS:
                    continue
                if len(payload) < 12 or (len(payload) - 4) % 8:
                    raise NBDError("a block status reply is malformed")
                if struct.unpack(">I", payload[:4])[0] != context_id:
                    continue
                for i in range(4, len(payload), 8):
                    size, flags = struct.unpack(">II", payload[i:i + 8])
                    size = min(size, self.size - at)
                    if size <= 0:
                        break
                    if wanted(flags):
                        if runs and runs[-1][0] + runs[-1][1] == at:
                            runs[-1] = (runs[-1][0], runs[-1][1] + size)
                        else:
                            runs.append((at, size))
                    at += size
            if at <= offset:
                raise NBDError("the NBD server's block status covered nothing")
            offset = at
        return runs

    def read(self, offset: int, length: int) -> bytes:
        if not 0 < length <= MAX_READ or offset < 0 or offset + length > self.size:
            raise NBDError(f"a read of {length} bytes at {offset} is out of the export")
        handle = self._send_request(CMD_READ, offset, length)
        out = bytearray(length)
        for kind, payload in self._replies(handle):
            header = {REPLY_OFFSET_DATA: 8, REPLY_OFFSET_HOLE: 12}.get(kind, 0)
            if len(payload) < header:  # an offset (and a hole's size) comes first
                raise NBDError("an NBD read reply is malformed")
            if kind == REPLY_OFFSET_DATA:
                (at,) = struct.unpack(">Q", payload[:8])
                data = payload[8:]
                if not offset <= at <= at + len(data) <= offset + length:
                    raise NBDError("an NBD read reply lies outside the read")
                out[at - offset:at - offset + len(data)] = data
            elif kind == REPLY_OFFSET_HOLE:
                at, size = struct.unpack(">QI", payload[:12])
                if not offset <= at <= at + size <= offset + length:
                    raise NBDError("an NBD hole reply lies outside the read")
                out[at - offset:at - offset + size] = bytes(size)
        return bytes(out)

    def _send_request(self, command: int, offset: int, length: int) -> int:
        self._handle += 1
        self._sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, command, self._handle,
                                       offset, length))
        return self._handle

    def _replies(self, handle: int) -> Iterator[tuple[int, bytes]]:
        """The chunks of one structured reply, until its last; errors raise."""
        while True:
            (magic,) = struct.unpack(">I", self._recv(4))
            if magic == SIMPLE_REPLY_MAGIC:
                error, got = struct.unpack(">IQ", self._recv(12))
                if got != handle or error:
                    raise NBDError(f"the NBD server answered error {error}")
                raise NBDError("the NBD server sent a simple reply after structured replies "
                               "were agreed")
            if magic != STRUCTURED_REPLY_MAGIC:
                raise NBDError("the NBD server's reply is malformed")
            flags, kind, got, length = struct.unpack(">HHQI", self._recv(16))
            if got != handle or length > MAX_READ + 64:
                raise NBDError("the NBD server's reply is malformed")
            payload = self._recv(length)
            if kind & REPLY_ERROR_BIT:
                error = struct.unpack(">I", payload[:4])[0] if len(payload) >= 4 else 0
                raise NBDError(f"the NBD server answered error {error}")
            if kind != REPLY_NONE:
                yield kind, payload
            if flags & REPLY_FLAG_DONE:
                return

    def _recv(self, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            part = self._sock.recv(min(length - len(out), 1 << 20))
            if not part:
                raise NBDError("the NBD server closed the connection")
            out += part
        return bytes(out)


__all__ = ["Client", "NBDError"]
