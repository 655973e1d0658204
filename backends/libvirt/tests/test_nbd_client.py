"""anyvirt's small NBD client against QEMU's own server (``qemu-nbd``), and against a peer
that does not speak NBD (it must fail with NBDError, never guess)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyvirt_libvirt.nbd import Client, NBDError

KIB, MIB = 1024, 1024 * 1024


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A 64 MiB qcow2 with data at 0-8 MiB, a bitmap added, then two writes, served by
    qemu-nbd with that bitmap."""
    image = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 8M", str(image)], check=True,
                   capture_output=True)
    subprocess.run(["qemu-img", "bitmap", "--add", "-f", "qcow2", str(image), "b"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 2 10M 64k", "-c",
                    "write -P 3 33M 1M", str(image)], check=True, capture_output=True)
    sock = tmp_path / "nbd.sock"
    proc = subprocess.Popen(["qemu-nbd", "--read-only", "--format=qcow2", "--bitmap=b",
                             f"--socket={sock}", "--", str(image)])
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield str(sock), image
    finally:
        proc.kill()
        proc.wait()


def test_dirty_extents_data_and_reads_match_what_was_written(exported: tuple[str, Path]) -> None:
    sock, _image = exported
    with Client(sock, contexts=("base:allocation", "qemu:dirty-bitmap:b")) as client:
        assert client.size == 64 * MIB
        assert client.dirty("qemu:dirty-bitmap:b") == [(10 * MIB, 64 * KIB), (33 * MIB, MIB)]
        assert client.data() == [(0, 8 * MIB), (10 * MIB, 64 * KIB), (33 * MIB, MIB)]
        assert client.read(10 * MIB - 4, 8) == bytes(4) + b"\x02" * 4
        assert client.read(40 * MIB, 64 * KIB) == bytes(64 * KIB)
        with pytest.raises(NBDError, match="out of the export"):
            client.read(64 * MIB - 1, 2)


def test_an_unknown_meta_context_is_refused(exported: tuple[str, Path]) -> None:
    with pytest.raises(NBDError, match="no 'qemu:dirty-bitmap:other'"):
        Client(exported[0], contexts=("qemu:dirty-bitmap:other",))


def test_a_peer_that_is_not_nbd_fails_cleanly(tmp_path: Path) -> None:
    path = str(tmp_path / "liar.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def lie() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")

    thread = threading.Thread(target=lie, daemon=True)
    thread.start()
    try:
        with pytest.raises(NBDError, match="newstyle"):
            Client(path, timeout=5)
    finally:
        thread.join(5)
        server.close()
