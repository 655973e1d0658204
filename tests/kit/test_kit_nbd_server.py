"""The kit's NBD server read by QEMU itself: qemu-img over an NBD URI, and a linked
clone's chain served layer by layer, flattened by qemu-storage-daemon's raw view."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from anyvirt.kit import nbd_server, raw_view

MIB = 1024 * 1024


def _file_export(path: Path) -> nbd_server.Export:
    fd = os.open(path, os.O_RDONLY)
    return nbd_server.Export(size=path.stat().st_size, read_at=lambda o, n: os.pread(fd, n, o))


def _chain(tmp_path: Path) -> tuple[Path, Path]:
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 3M", str(base)], check=True,
                   capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                    str(top)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 1M", str(top)], check=True,
                   capture_output=True)
    return base, top


def _flat_sha(image: Path, tmp_path: Path) -> str:
    out = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def test_qemu_img_reads_an_export(tmp_path: Path) -> None:
    base, _top = _chain(tmp_path)
    with nbd_server.NbdServer({"base": _file_export(base)}) as server:
        out = tmp_path / "via-nbd.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                        f"nbd+unix:///base?socket={server.socket_path}", str(out)], check=True)
        assert server.bytes_served > 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == _flat_sha(base, tmp_path)


@pytest.mark.skipif(not raw_view.available(), reason="no qemu-storage-daemon or /dev/fuse")
def test_a_chain_is_flattened_in_the_raw_view(tmp_path: Path) -> None:
    base, top = _chain(tmp_path)
    exports = {"top": _file_export(top), "base": _file_export(base)}
    with nbd_server.NbdServer(exports) as server, raw_view.raw_view_of_nbd_chain(
            server.socket_path, [("top", "qcow2"), ("base", "qcow2")], 16 * MIB) as view:
        seen = hashlib.sha256(view.read_bytes()).hexdigest()
    assert seen == _flat_sha(top, tmp_path)


@pytest.mark.skipif(not raw_view.available(), reason="no qemu-storage-daemon or /dev/fuse")
def test_a_failed_read_is_an_io_error_with_its_cause_kept(tmp_path: Path) -> None:
    base, _top = _chain(tmp_path)
    good = _file_export(base)

    def failing(offset: int, length: int) -> bytes:
        if offset >= 256 * 1024:  # the header and tables pass; data does not
            raise OSError("the source went away")
        return good.read_at(offset, length)

    exports = {"base": nbd_server.Export(size=good.size, read_at=failing)}
    with nbd_server.NbdServer(exports) as server, raw_view.raw_view_of_nbd_chain(
            server.socket_path, [("base", "qcow2")], 16 * MIB) as view:
        with pytest.raises(OSError, match="Input/output error"), open(view, "rb") as handle:
            handle.read(3 * MIB)
        assert "the source went away" in str(server.errors[0])


@pytest.mark.parametrize("structured", [False, True])
def test_reads_are_cut_at_the_piece_size(tmp_path: Path, structured: bool) -> None:
    """An export of 1 MiB pieces (decoded chunks) is never asked for bytes of two pieces at
    once, and what QEMU reads is the export, byte for byte."""
    content = os.urandom(3 * MIB) + bytes(MIB) + os.urandom(MIB // 2 + 512)
    asked: list[tuple[int, int]] = []

    def read_at(offset: int, length: int) -> memoryview:
        asked.append((offset, length))
        return memoryview(content)[offset:offset + length]

    status = (lambda offset, length: [(length, False)]) if structured else None
    export = nbd_server.Export(size=len(content), read_at=read_at, status=status,
                               concurrency=2, piece_size=MIB)
    out = tmp_path / "copy.raw"
    with nbd_server.NbdServer({"disk": export}) as server:
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw",
                        f"nbd+unix:///disk?socket={server.socket_path}", str(out)], check=True)
    assert out.read_bytes() == content
    assert asked and all(o // MIB == (o + n - 1) // MIB for o, n in asked)
