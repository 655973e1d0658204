"""A loopback TCP proxy that injects the faults a real network has, for plain-HTTP testbeds.

* ``cut_after(marker, then_gone=False)``: the next request containing ``marker`` reaches the
  server; the server's answer starts coming back, and then the connection is
  cut before the client sees a byte of it. The change was made, the caller
  cannot know: the case ``OutcomeUnknown`` exists for.
* ``drop_all()``: every open connection is closed, as a server does with idle
  keep-alive connections (or a restart): a client's pooled connection is stale.
* ``refusing``: new connections are closed at once (the server is gone).
* ``upstream``: where to forward; change it to "restart" the server elsewhere.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class FaultyProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.refusing = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._marker: bytes | None = None
        self._then_gone = False
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="faulty-proxy").start()

    # ------------------------------------------------------------ faults
    def cut_after(self, marker: bytes, *, then_gone: bool = False) -> None:
        """Cut the answer of the next request holding ``marker``; with ``then_gone`` the
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
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop_all()

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
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            cut = threading.Event()
            threading.Thread(target=self._upward, args=(client, server, cut), daemon=True).start()
            threading.Thread(target=self._downward, args=(server, client, cut), daemon=True).start()

    def _upward(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        seen = b""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                seen = (seen + data)[-65536:]
                with self._lock:
                    if self._marker is not None and self._marker in seen:
                        self._marker = None
                        cut.set()
                server.sendall(data)
        self._close(client, server)

    def _downward(self, server: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if cut.is_set():  # the server has answered: the change is made; lose the answer
                    self.cuts += 1
                    if self._then_gone:
                        self.refusing = True
                        self.drop_all()
                    break
                client.sendall(data)
        self._close(client, server)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
