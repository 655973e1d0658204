"""One loopback TCP proxy that injects the faults a real network has, for every test that
needs them (moves, backups, hostile fault reports).

It relays bytes both ways unchanged (TLS passes through end to end, so the client
still verifies the real server's certificate). Faults, each off until asked:

* ``cut_after=N`` (with ``direction`` "down" or "up"): a connection is closed once it
  has carried N bytes that way: SOAP calls stay small and pass, a disk transfer is cut
  half-way. ``pause``: seconds to wait after each 64 KiB relayed that way (a slow link,
  so a test can act while a transfer is under way).
* ``cut_answer(marker, then_gone=False)``: the next request holding ``marker`` reaches
  the server; its answer is lost before the client sees a byte of it. The change was
  made, the caller cannot know: the case ``OutcomeUnknown`` exists for. With
  ``then_gone`` the server is unreachable from then on.
* ``drop_all()``: every open connection is closed, as a server does with idle keep-alive
  connections (or a restart): a client's pooled connection is stale.
* ``refusing``: new connections are closed at once (the server is gone).
* ``upstream``: where to forward; change it to "restart" the server elsewhere.

``cuts`` counts the connections cut; ``relayed`` the bytes passed on each way.

An ``upstream`` that is a path is a UNIX socket (a libvirt daemon's): the proxy then
listens on a UNIX socket of its own, at ``self.path``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time


class FaultProxy:
    def __init__(self, upstream: tuple[str, int] | str, *, cut_after: int | None = None,
                 direction: str = "down", pause: float = 0.0) -> None:
        assert direction in ("down", "up")
        self.upstream = upstream
        self.cut_after, self.direction, self.pause = cut_after, direction, pause
        self.refusing = False
        self.cuts = 0
        self.relayed = {"up": 0, "down": 0}  # bytes passed on each way, all connections
        self.path = ""
        if isinstance(upstream, str):
            # not the (often patched) temp dir: tests check that one is left empty
            self._dir = tempfile.TemporaryDirectory(prefix="fault-proxy-", dir="/tmp")
            self.path = os.path.join(self._dir.name, "sock")
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(self.path)
            self._listener.listen(16)
            self.port = 0
        else:
            self._listener = socket.create_server(("127.0.0.1", 0))
            self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._marker: bytes | None = None
        self._then_gone = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ faults
    def cut_answer(self, marker: bytes, *, then_gone: bool = False) -> None:
        """Lose the answer to the next request holding ``marker``; with ``then_gone`` the
        server is unreachable from then on (``refusing``)."""
        with self._lock:
            self._marker = marker
            self._then_gone = then_gone

    def drop_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop_all()
        if self.path:
            self._dir.cleanup()

    # ------------------------------------------------------------ plumbing
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                server = _connect(self.upstream)
            except OSError:  # the upstream is gone (killed): refuse, as it would
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            link = _Link(client, server)
            threading.Thread(target=self._pump, args=(link, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, "down"), daemon=True).start()

    def _pump(self, link: _Link, way: str) -> None:
        src, dst = (link.client, link.server) if way == "up" else (link.server, link.client)
        seen = b""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                link.carried[way] += len(data)
                if way == "up":
                    seen = (seen + data)[-65536:]
                    with self._lock:
                        if self._marker is not None and self._marker in seen:
                            self._marker = None
                            link.answer_lost = True
                elif link.answer_lost:  # the server has answered: the change is made
                    self._cut(link)
                    if self._then_gone:
                        self.refusing = True
                        self.drop_all()
                    break
                if (self.cut_after is not None and way == self.direction
                        and link.carried[way] > self.cut_after):
                    self._cut(link)
                    break
                dst.sendall(data)
                self.relayed[way] += len(data)
                if self.pause and way == self.direction:
                    time.sleep(self.pause)
        for sock in (link.client, link.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _cut(self, link: _Link) -> None:
        with self._lock:
            if not link.cut:
                link.cut = True
                self.cuts += 1


def _connect(upstream: tuple[str, int] | str) -> socket.socket:
    if isinstance(upstream, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(upstream)
        return sock
    return socket.create_connection(upstream, timeout=10)


class _Link:
    """One client connection and its upstream twin."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.carried = {"up": 0, "down": 0}
        self.answer_lost = False
        self.cut = False


__all__ = ["FaultProxy"]
