"""A VM's serial console through PVE's terminal proxy, as the web UI's xterm.js reaches it.

``POST .../termproxy`` (``serial=serialN``) gives a one-time ticket; the websocket at
``.../vncwebsocket`` takes ``user:ticket`` as its first message, answers ``OK``, then carries
the guest's output as binary frames and the input as ``0:<bytes>:<data>`` text messages.
The serial port must be a socket (``serial0: socket``), which anyvirt gives the VMs it makes.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import requests
import websocket

from anyvirt.errors import ConnectionFailed, ConsoleClosed, InvalidState
from anyvirt_proxmox.config import vmid
from anyvirt_proxmox.inventory import Inventory

#: a serial port PVE's terminal can reach: a socket, not a host device
SOCKET_PORT = re.compile(r"^serial([0-3])$")
#: the port anyvirt gives the VMs it creates
CREATED_PORT = ("serial0", "socket")
#: while a console is quiet, how often the VM's state is asked (seconds)
STATE_EVERY = 2.0


def serial_port(config: dict[str, Any]) -> str | None:
    """The VM's first serial port that is a socket (``serial0``), if any."""
    for key in sorted(config):
        if SOCKET_PORT.match(key) and str(config[key]).strip() == "socket":
            return key
    return None


class TerminalConsole:
    """An attached serial terminal: the websocket and the VM's name for messages.

    PVE's proxy ends the terminal when the VM's QEMU exits, but a proxy that does not (or
    a connection that hangs) must not leave a reader waiting on a stopped VM: while no
    output comes, the VM's state is asked every :data:`STATE_EVERY` seconds."""

    def __init__(self, ws: websocket.WebSocket, name: str, running: Callable[[], bool]) -> None:
        self._ws = ws
        self._name = name
        self._running = running
        self._send_lock = threading.Lock()
        self._ended = False
        self._state_asked = time.monotonic()

    def read(self, timeout: float) -> bytes:
        if self._ended:
            raise ConsoleClosed(f"the console of VM {self._name!r} ended")
        self._ws.settimeout(max(timeout, 0.001))
        try:
            opcode, data = self._ws.recv_data()
        except (websocket.WebSocketTimeoutException, TimeoutError):
            self._check_running()
            return b""
        except (websocket.WebSocketException, OSError) as exc:
            self._ended = True
            raise ConsoleClosed(f"the console of VM {self._name!r} ended: {exc}") from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self._ended = True
            raise ConsoleClosed(f"the console of VM {self._name!r} ended")
        return data if isinstance(data, bytes) else bytes(data)

    def _check_running(self) -> None:
        if time.monotonic() - self._state_asked < STATE_EVERY:
            return
        self._state_asked = time.monotonic()
        if not self._running():
            self.close()
            raise ConsoleClosed(f"the console of VM {self._name!r} ended: the VM stopped")

    def write(self, data: bytes) -> None:
        # the length is the payload's in bytes; the payload itself goes as text, which is
        # what the terminal proxy reads (xterm.js sends it so)
        message = f"0:{len(data)}:".encode() + data
        with self._send_lock:
            if self._ended:
                raise ConsoleClosed(f"the console of VM {self._name!r} ended")
            try:
                self._ws.send(message.decode("utf-8", errors="surrogateescape"),
                              websocket.ABNF.OPCODE_TEXT)
            except (websocket.WebSocketException, OSError) as exc:
                self._ended = True
                raise ConsoleClosed(f"the console of VM {self._name!r} ended: {exc}") from None

    def close(self) -> None:
        with self._send_lock:
            self._ended = True
            with contextlib.suppress(websocket.WebSocketException, OSError):
                self._ws.close()


def open_console(inv: Inventory, vm_id: str, timeout: float) -> TerminalConsole:
    """Attach to the VM's serial terminal; InvalidState if it has no socket serial port."""
    config = inv.vm_config(vm_id)
    name = str(config.get("name") or vm_id)
    port = serial_port(config)
    if port is None:
        raise InvalidState(
            f"VM {name!r} has no serial port PVE's terminal can reach: add one with "
            f"'serial0: socket' (qm set {vmid(vm_id)} --serial0 socket) and restart it")
    node = inv.node_of(vm_id)
    proxy = inv.session.post(("nodes", node, "qemu", vmid(vm_id), "termproxy"),
                             f"opening the console of VM {name!r}", serial=port)
    def running() -> bool:
        status = inv.vm_get(vm_id, ("status", "current"), f"state of VM {name!r}")
        return str(status.get("status")) == "running"

    return TerminalConsole(_attach(inv, node, vm_id, proxy, timeout), name, running)


def _attach(inv: Inventory, node: str, vm_id: str, proxy: dict[str, Any],
            timeout: float) -> websocket.WebSocket:
    """The websocket, past PVE's handshake. Its own frame: the one-time ticket is never a
    local of a frame that a failed attach's traceback keeps."""
    session = inv.session
    path = "/".join(quote(str(s), safe="") for s in ("nodes", node, "qemu", vmid(vm_id),
                                                      "vncwebsocket"))
    query = urlencode({"port": proxy["port"], "vncticket": proxy["ticket"]})
    base = session.native._store["base_url"]
    url = f"{base}/{path}?{query}".replace("https://", "wss://", 1)
    try:
        ws = websocket.create_connection(
            url, timeout=timeout, subprotocols=["binary"],
            header=_auth_headers(session.native, base), sslopt=_ssl_options(session.tls_verify))
        ws.send(f"{proxy['user']}:{proxy['ticket']}\n", websocket.ABNF.OPCODE_TEXT)
        _, answer = ws.recv_data()
    except (websocket.WebSocketException, OSError) as exc:
        raise ConnectionFailed(f"attaching to the console of VM {vm_id}: "
                               f"{type(exc).__name__}") from None
    if answer not in (b"OK", "OK"):
        with contextlib.suppress(websocket.WebSocketException, OSError):
            ws.close()
        raise ConnectionFailed(f"PVE's terminal proxy refused the console of VM {vm_id}")
    return ws


def _auth_headers(api: Any, base: str) -> list[str]:
    """The login the API requests carry (the ticket cookie, or the API token header), for
    the websocket's upgrade request."""
    auth = api._store["session"].auth
    prepared = requests.Request("GET", base, cookies=auth.get_cookies(), auth=auth).prepare()
    headers: dict[str, str] = {k: str(v) for k, v in prepared.headers.items()}
    return [f"{key}: {headers[key]}" for key in ("Cookie", "Authorization") if key in headers]


def _ssl_options(verify: bool | str) -> dict[str, Any]:
    """The same TLS rule as every API request: verified unless turned off; a CA bundle."""
    if verify is False:
        return {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "check_hostname": True}
    if isinstance(verify, str):
        options["ca_certs"] = verify
    return options
