"""A read-only NBD server on a private UNIX socket, over any ``read_at`` a backend has.

Why: a disk that sits on another machine (a remote libvirt daemon's volume, read by
``virStorageVolDownload`` ranges) must reach a target's import without a staging copy.
QEMU's block layer reads NBD, so serving the remote file's bytes as an NBD export
lets ``qemu-storage-daemon`` decode it (qcow2, a linked clone's whole chain) into a
raw view (:mod:`anyvirt.kit.raw_view`) that every import already reads. Only the
ranges QEMU asks for cross the wire: the metadata, then the data clusters.

The protocol part is the fixed-newstyle handshake with ``NBD_OPT_GO``/``INFO``,
``EXPORT_NAME``, ``LIST`` and ``ABORT``, and simple replies to ``READ`` and ``DISC``
(RFC: the NBD protocol document, doc/proto.md of the NBD project). Everything else is
refused with an error code; nothing is ever written. The socket lives in a 0700
directory of its own, so only this user's processes reach it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

from attrs import frozen

from anyvirt.errors import AnyvirtError
from anyvirt.kit.nbd_protocol import (
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
    OPT_REPLY_MAGIC,
    REP_ACK,
    REP_ERR_UNKNOWN,
    REP_ERR_UNSUP,
    REP_INFO,
    REP_SERVER,
    REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC,
    TRANSMISSION_HAS_FLAGS,
    TRANSMISSION_READ_ONLY,
)

TRANSMISSION_FLAGS = TRANSMISSION_HAS_FLAGS | TRANSMISSION_READ_ONLY
SECTOR = 512


@frozen
class Export:
    """One export: ``size`` bytes, read by ``read_at(offset, length)`` (exactly ``length``
    bytes or an exception). The advertised size is rounded up to whole sectors (QEMU
    wants them); the tail past ``size`` reads as zeros."""

    size: int
    read_at: Callable[[int, int], bytes]


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
            export = self._handshake(client)
            if export is not None:
                self._transmit(client, export)

    def _handshake(self, client: socket.socket) -> Export | None:
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
            else:
                _reply(client, option, REP_ERR_UNSUP)

    def _transmit(self, client: socket.socket, export: Export) -> None:
        advertised = _advertised(export)
        while True:
            magic, _flags, kind, handle, offset, length = struct.unpack(">IHHQQI",
                                                                       _recv(client, 28))
            if magic != REQUEST_MAGIC:
                return
            if kind == CMD_DISC:
                return
            if kind != CMD_READ:
                error = EPERM if kind in (CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES) else EINVAL
                client.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, handle))
                continue
            if length > MAX_READ or offset + length > advertised:
                client.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, EINVAL, handle))
                continue
            try:
                data = _read(export, offset, length)
            except (AnyvirtError, OSError) as error:
                self.errors.append(error)
                client.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, EIO, handle))
                continue
            self.bytes_served += length
            client.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, handle) + data)


def _advertised(export: Export) -> int:
    return -(-export.size // SECTOR) * SECTOR


def _read(export: Export, offset: int, length: int) -> bytes:
    inside = max(0, min(length, export.size - offset))
    data = export.read_at(offset, inside) if inside else b""
    if len(data) != inside:
        raise OSError(f"read {len(data)} of {inside} bytes at {offset}")
    return data + bytes(length - inside)


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
