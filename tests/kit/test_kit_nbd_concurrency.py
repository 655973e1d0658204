"""The kit's NBD server answers several requests of one connection at once where the export
allows it (``Export.concurrency``): each reply whole, in the order they are ready (the
protocol matches them by handle). Spoken to by a minimal client of the protocol here (to
see the order of the replies), and read by QEMU's own client with requests in flight."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from anyvirt.kit import nbd_server
from anyvirt.kit.nbd_protocol import (
    CMD_DISC,
    CMD_READ,
    EIO,
    FLAG_FIXED_NEWSTYLE,
    FLAG_NO_ZEROES,
    IHAVEOPT,
    NBDMAGIC,
    OPT_EXPORT_NAME,
    REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC,
)

MIB = 1024 * 1024
SIZE = 4 * MIB
CONTENT = bytes(range(256)) * (SIZE // 256)
WAIT = 5.0


def _recv(sock: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        got = sock.recv(size - len(out))
        assert got, "the server closed the connection"
        out += got
    return out


def _connect(path: Path, name: str) -> socket.socket:
    """A client through the oldest way in: fixed newstyle, EXPORT_NAME, simple replies."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(3 * WAIT)
    sock.connect(str(path))
    assert _recv(sock, 8) == NBDMAGIC and struct.unpack(">Q", _recv(sock, 8))[0] == IHAVEOPT
    _recv(sock, 2)
    sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, len(name)) + name.encode())
    size, _flags = struct.unpack(">QH", _recv(sock, 10))
    assert size == SIZE
    return sock


def _request(sock: socket.socket, kind: int, handle: int, offset: int, length: int) -> None:
    sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, kind, handle, offset, length))


def _reply(sock: socket.socket, lengths: dict[int, int]) -> tuple[int, int, bytes]:
    magic, error, handle = struct.unpack(">IIQ", _recv(sock, 16))
    assert magic == SIMPLE_REPLY_MAGIC
    return handle, error, (_recv(sock, lengths[handle]) if error == 0 else b"")


def _waiting_export(concurrency: int, wait: float = WAIT) -> tuple[nbd_server.Export, list[int]]:
    """The read at 0 waits until the read at 1 MiB has begun: answered one at a time, it
    waits in vain (and fails); answered at once, the later request's reply goes first."""
    second_began = threading.Event()
    finished: list[int] = []

    def read_at(offset: int, length: int) -> bytes:
        if offset == 0 and not second_began.wait(wait):
            raise OSError("the second request never began while the first was read")
        if offset == MIB:
            second_began.set()
        finished.append(offset)
        return CONTENT[offset:offset + length]

    return nbd_server.Export(size=SIZE, read_at=read_at, concurrency=concurrency), finished


def test_requests_in_flight_are_answered_at_once_and_out_of_order() -> None:
    export, finished = _waiting_export(concurrency=2)
    with nbd_server.NbdServer({"disk": export}) as server:
        sock = _connect(server.socket_path, "disk")
        with sock:
            lengths = {1: 64 * 1024, 2: 128 * 1024}
            _request(sock, CMD_READ, 1, 0, lengths[1])
            _request(sock, CMD_READ, 2, MIB, lengths[2])
            first, second = _reply(sock, lengths), _reply(sock, lengths)
            _request(sock, CMD_DISC, 3, 0, 0)
    assert not server.errors
    assert finished == [0 + MIB, 0]
    assert first == (2, 0, CONTENT[MIB:MIB + lengths[2]])  # the later one, ready first
    assert second == (1, 0, CONTENT[:lengths[1]])
    assert server.bytes_served == sum(lengths.values())


def test_an_export_for_one_reader_is_still_answered_in_order() -> None:
    """Concurrency 1 (the default, every backend's own exports): the first request is read
    before the second is, so here it times out and fails, and the replies come in order."""
    export, finished = _waiting_export(concurrency=1, wait=0.5)
    with nbd_server.NbdServer({"disk": export}) as server:
        sock = _connect(server.socket_path, "disk")
        with sock:
            lengths = {1: 4096, 2: 4096}
            _request(sock, CMD_READ, 1, 0, lengths[1])
            _request(sock, CMD_READ, 2, MIB, lengths[2])
            first, second = _reply(sock, lengths), _reply(sock, lengths)
    assert first[:2] == (1, EIO) and second == (2, 0, CONTENT[MIB:MIB + 4096])
    assert finished == [MIB]
    assert "never began" in str(server.errors[0])


@pytest.mark.parametrize("structured", [False, True])
def test_qemu_reads_a_concurrent_export_byte_for_byte(tmp_path: Path, structured: bool) -> None:
    """qemu-img convert keeps several requests in flight on its one connection; a failed
    read among them is its own error reply, kept as the cause."""
    active, most = 0, 0
    lock = threading.Lock()
    overlapped = threading.Event()

    def read_at(offset: int, length: int) -> bytes:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
            if active > 1:
                overlapped.set()
        try:
            overlapped.wait(WAIT)  # the first read waits for the next one to begin
            return CONTENT[offset:offset + length]
        finally:
            with lock:
                active -= 1

    status = (lambda offset, length: [(length, False)]) if structured else None
    export = nbd_server.Export(size=SIZE, read_at=read_at, status=status, concurrency=4)
    out = tmp_path / "copy.raw"
    with nbd_server.NbdServer({"disk": export}) as server:
        subprocess.run(["qemu-img", "convert", "-S", "0", "-f", "raw", "-O", "raw",
                        f"nbd+unix:///disk?socket={server.socket_path}", str(out)], check=True)
    assert out.read_bytes() == CONTENT
    assert most > 1, "qemu-img's requests were answered one at a time"
    assert not server.errors


def test_a_failed_read_among_concurrent_ones_is_one_error_reply(tmp_path: Path) -> None:
    def read_at(offset: int, length: int) -> bytes:
        if offset >= 2 * MIB:
            raise OSError("the chunk could not be read")
        return CONTENT[offset:offset + length]

    export = nbd_server.Export(size=SIZE, read_at=read_at,
                               status=lambda offset, length: [(length, False)], concurrency=4)
    with nbd_server.NbdServer({"disk": export}) as server:
        done = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw",
                               f"nbd+unix:///disk?socket={server.socket_path}",
                               str(tmp_path / "out.raw")], capture_output=True, text=True)
    assert done.returncode != 0 and "Input/output error" in done.stderr
    assert server.errors and "could not be read" in str(server.errors[0])


def test_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        nbd_server.Export(size=SIZE, read_at=lambda o, n: bytes(n), concurrency=0)
