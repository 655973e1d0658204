"""Fault injection for move tests: a loopback TCP proxy that cuts connections, a small tmpfs.

The proxy relays bytes both ways unchanged (TLS passes through end to end, so
the client still verifies the real server's certificate) and closes a
connection once it has carried ``cut_after`` bytes in the chosen direction:
SOAP calls stay small and pass, a disk transfer is cut half-way.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp dir moves, backups and restores work in, for this test: a test checks it
    is empty afterwards."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


class CuttingProxy:
    def __init__(self, upstream: tuple[str, int], *, cut_after: int | None = None,
                 direction: str = "down", pause: float = 0.0) -> None:
        """``pause``: seconds to wait after each 64 KiB relayed in ``direction`` (a slow
        link, so a test can act while a transfer is under way)."""
        assert direction in ("down", "up")
        self.pause = pause
        self.upstream = upstream
        self.cut_after = cut_after
        self.direction = direction
        self.cuts = 0
        self.relayed = {"up": 0, "down": 0}  # bytes passed on each way, all connections
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._open: list[socket.socket] = []

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.close()
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:  # the upstream is gone (killed): refuse, as it would
                client.close()
                continue
            self._open += [client, server]
            state = {"down": 0, "up": 0, "cut": False}
            for src, dst, way in ((server, client, "down"), (client, server, "up")):
                threading.Thread(target=self._pump, args=(src, dst, way, state, client, server),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str, state: dict[str, int],
              client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                state[way] += len(data)
                if (self.cut_after is not None and way == self.direction
                        and state[way] > self.cut_after):
                    if not state["cut"]:
                        state["cut"] = True
                        self.cuts += 1
                    break
                dst.sendall(data)
                self.relayed[way] += len(data)
                if self.pause and way == self.direction:
                    time.sleep(self.pause)
        except OSError:
            pass
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real size-limited file system: writes past it fail with ENOSPC."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["CuttingProxy", "sha256_file", "small_tmpfs", "temp_dir"]
