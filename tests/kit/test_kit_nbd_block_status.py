"""The kit's NBD server says where an export's zeros are (``base:allocation``), read by QEMU
itself: qemu-img's map over an NBD URI, and SEEK_DATA on qemu-storage-daemon's raw view.
Exports that do not know their zeros are served as before."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from anyvirt.kit import nbd_server, raw_view

MIB = 1024 * 1024
SIZE = 16 * MIB
#: (offset, length) of the data; everything else is zeros
DATA = ((2 * MIB, MIB), (9 * MIB, 3 * MIB))


def _content() -> bytes:
    out = bytearray(SIZE)
    for offset, length in DATA:
        out[offset:offset + length] = bytes([0x5A]) * length
    return bytes(out)


def _status(offset: int, length: int) -> list[tuple[int, bool]]:
    """Runs from the DATA table, one per MiB (the server merges them)."""
    runs = []
    at, end = offset, min(offset + length, SIZE)
    while at < end:
        upto = min((at // MIB + 1) * MIB, end)
        zero = not any(o <= at < o + n for o, n in DATA)
        runs.append((upto - at, zero))
        at = upto
    return runs


def _export(content: bytes, *, with_status: bool) -> nbd_server.Export:
    return nbd_server.Export(size=len(content), read_at=lambda o, n: content[o:o + n],
                             status=_status if with_status else None)


def _map(socket_path: Path) -> list[dict[str, object]]:
    done = subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw",
                           f"nbd+unix:///disk?socket={socket_path}"],
                          check=True, capture_output=True, text=True)
    found: list[dict[str, object]] = json.loads(done.stdout)
    return found


def test_qemu_sees_the_zeros_of_an_export_that_knows_them(tmp_path: Path) -> None:
    content = _content()
    with nbd_server.NbdServer({"disk": _export(content, with_status=True)}) as server:
        data = [(m["start"], m["length"]) for m in _map(server.socket_path) if m["data"]]
        assert data == list(DATA)
        out = tmp_path / "copy.raw"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw",
                        f"nbd+unix:///disk?socket={server.socket_path}", str(out)], check=True)
        assert out.read_bytes() == content
        # the holes were never read: only the data crossed the socket
        assert server.bytes_served == sum(n for _, n in DATA)


def test_an_export_without_status_is_all_data_as_before(tmp_path: Path) -> None:
    content = _content()
    with nbd_server.NbdServer({"disk": _export(content, with_status=False)}) as server:
        assert [(m["start"], m["length"], m["data"]) for m in _map(server.socket_path)] == [
            (0, SIZE, True)]


@pytest.mark.skipif(not raw_view.available(), reason="needs qemu-storage-daemon and /dev/fuse")
def test_the_raw_view_answers_seek_data_from_the_export(tmp_path: Path) -> None:
    content = _content()
    with nbd_server.NbdServer({"disk": _export(content, with_status=True)}) as server, \
            raw_view.raw_view_of_nbd_chain(server.socket_path, [("disk", "raw")], SIZE) as view:
        fd = os.open(view, os.O_RDONLY)
        try:
            assert os.lseek(fd, 0, os.SEEK_DATA) == DATA[0][0]
            assert os.lseek(fd, DATA[0][0], os.SEEK_HOLE) == sum(DATA[0])
            assert os.lseek(fd, sum(DATA[0]), os.SEEK_DATA) == DATA[1][0]
            assert os.pread(fd, SIZE, 0) == content
        finally:
            os.close(fd)


def test_a_failed_read_is_an_error_reply_when_structured(tmp_path: Path) -> None:
    def failing(offset: int, length: int) -> bytes:
        raise OSError("the chunk could not be read")

    export = nbd_server.Export(size=SIZE, read_at=failing, status=_status)
    with nbd_server.NbdServer({"disk": export}) as server:
        done = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw",
                               f"nbd+unix:///disk?socket={server.socket_path}",
                               str(tmp_path / "out.raw")], capture_output=True, text=True)
        assert done.returncode != 0
        assert server.errors and "could not be read" in str(server.errors[0])
