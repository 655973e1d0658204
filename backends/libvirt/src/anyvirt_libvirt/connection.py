"""One libvirt connection that notices when it drops and re-opens itself.

* The anyvirt URI ``libvirt+<libvirt-uri>`` maps to ``<libvirt-uri>``: the
  scheme loses its ``libvirt+`` prefix, the rest is kept (user, host, port,
  path, query minus anyvirt's own options). A password never enters the URI:
  it is handed to ``openAuth`` through the credential callback.
* libvirt's keepalive needs an event loop. :func:`ensure_event_loop` registers
  libvirt's default implementation and runs it in one daemon thread, once per
  process, before the first connection is opened (``qemu:///embed`` needs the
  same loop to watch its QEMU processes).
* ``qemu:///embed`` starts libvirt's QEMU driver inside each process that opens it, and
  the driver re-attaches to the guests already running in threads of its own: opening
  waits for that (:func:`_await_reconnects`) before anyone acts on a guest.
* A connection error (daemon gone, socket closed, keepalive timeout) raises
  ``ConnectionFailed`` and marks the connection dead; the next call opens a
  new one. Nothing is retried behind the caller's back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, cast
from urllib.parse import quote

import libvirt

from anyvirt.errors import ConnectionFailed, InvalidSpec
from anyvirt.target import Target
from anyvirt_libvirt.errors import is_connection_error, translate

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def _silence(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; anyvirt raises them instead."""


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        libvirt.registerErrorHandler(_silence, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _loop_thread = threading.Thread(target=run, name="anyvirt-libvirt-events", daemon=True)
        _loop_thread.start()


#: anyvirt's own URI option of the libvirt backend (kvm|tcg): never passed on to libvirt
ACCEL_OPTION = "accel"


def libvirt_uri(target: Target) -> str:
    """The libvirt URI for an anyvirt target (never with a password in it)."""
    if not target.transport:  # the caller's URI is wrong: bad input, not a failed connection
        raise InvalidSpec(
            "a libvirt URI needs a driver after 'libvirt+', e.g. libvirt+qemu:///system"
        )
    netloc = ""
    if target.credentials.username:
        netloc = quote(target.credentials.username, safe="") + "@"
    if target.host:
        netloc += f"[{target.host}]" if ":" in target.host else quote(target.host, safe="")
    if target.port is not None:
        netloc += f":{target.port}"
    query = "&".join(
        f"{quote(key, safe='')}={quote(value, safe='/')}" for key, value in target.query.items()
        if key != ACCEL_OPTION
    )
    uri = f"{target.transport}://{netloc}{quote(target.path, safe='/')}"
    return f"{uri}?{query}" if query else uri


def _still_alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _await_reconnects(conn: libvirt.virConnect) -> None:
    """Return once the embedded driver has re-attached to every running guest.

    Each process that opens ``qemu:///embed`` starts libvirt's QEMU driver afresh, which
    re-attaches to the running guests in threads holding each guest's job while they query
    its monitor. A force stop does not wait for that job: it signals QEMU first, the
    reconnect's next monitor command then fails, and libvirt gives the guest up itself
    ("reason=daemon") while the stop answers "domain is not running". Any call that takes
    the guest's job waits for the reconnect; ``memoryStats`` is one, and cheap.
    """
    with suppress(libvirt.libvirtError):
        running = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        for dom in running:
            with suppress(libvirt.libvirtError):  # a guest gone meanwhile has nothing to wait for
                dom.memoryStats()


class Link:
    """A libvirt connection plus what is needed to open it again."""

    def __init__(self, uri: str, target: Target) -> None:
        self.uri = uri
        self._username = target.credentials.username
        self._password = target.credentials.password
        # keepalive: probe every 5 s; give up after the call timeout's worth of silence
        self._keepalive_interval = 5
        self._keepalive_count = max(1, int(target.timeout // 5))
        self._open_timeout = float(target.timeout)
        # in-process drivers cannot hang on a network, and embed's first open probes QEMU
        self._embedded = "/embed" in uri
        self._bounded_open = not uri.startswith("test:") and not self._embedded
        self._conn: libvirt.virConnect | None = None
        self._closed = False
        self._dropped = threading.Event()
        self._lock = threading.Lock()
        self.reconnects = 0
        #: run once after each reconnect, outside the lock (the in-flight volume sweep)
        self.after_reconnect: Callable[[], None] | None = None
        self._reconnected = threading.Event()
        self._opened_before = False
        #: called (from libvirt's event loop thread) when the connection closes under us
        self.on_drop: Callable[[], None] | None = None

    # ---------------------------------------------------------------- opening
    def _open_now(self) -> libvirt.virConnect:
        if self._password is not None:
            return libvirt.openAuth(self.uri, self._auth(), 0)
        return libvirt.open(self.uri)

    def _open_within_timeout(self) -> libvirt.virConnect:
        """libvirt's open has no timeout of its own: a host that accepts the TCP (or
        SSH) connection and then says nothing would block it for ever."""
        outcome: list[Any] = []
        abandoned: list[bool] = []
        handoff = threading.Lock()
        done = threading.Event()

        def opener() -> None:
            result: Any
            try:
                result = self._open_now()
            except BaseException as exc:
                result = exc
            with handoff:
                outcome.append(result)
                late = bool(abandoned)
            done.set()
            if late and isinstance(result, libvirt.virConnect):
                with suppress(libvirt.libvirtError):
                    result.close()  # too late: nobody holds this connection

        threading.Thread(target=opener, name="anyvirt-libvirt-open", daemon=True).start()
        done.wait(self._open_timeout)
        with handoff:
            if not outcome:
                abandoned.append(True)
                raise ConnectionFailed(
                    f"cannot connect to libvirt: no answer within {self._open_timeout:g} s "
                    "(raise it with ?timeout=SECONDS)"
                )
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return cast(libvirt.virConnect, result)

    def _open(self) -> libvirt.virConnect:
        ensure_event_loop()
        try:
            conn = self._open_within_timeout() if self._bounded_open else self._open_now()
        except libvirt.libvirtError as exc:
            error = translate(exc, "cannot connect to libvirt")
            if not isinstance(error, ConnectionFailed):
                error = ConnectionFailed(str(error))
            raise error from exc
        if conn is None:  # pragma: no cover - old bindings returned None
            raise ConnectionFailed("cannot connect to libvirt")
        if self._embedded:
            _await_reconnects(conn)
        # local drivers (test:///, qemu:///embed) have no keepalive: nothing can drop
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(self._keepalive_interval, self._keepalive_count)
        self._dropped.clear()
        with suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._on_close, None)
        return conn

    def _auth(self) -> list[Any]:
        username = self._username
        password = self._password

        def answer(credentials: list[list[Any]], _data: object) -> int:
            for cred in credentials:
                if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                    cred[4] = username or ""
                elif cred[0] in (libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT):
                    cred[4] = password.reveal() if password is not None else ""
                else:
                    return -1
            return 0

        wanted = [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT]
        return [wanted, answer, None]

    def _on_close(self, _conn: libvirt.virConnect, _reason: int, _opaque: object) -> None:
        self._dropped.set()
        hook = self.on_drop
        if hook is not None:
            hook()

    def connect(self) -> None:
        """Open now (``LibvirtDriver.open`` fails early on a bad URI)."""
        _ = self.conn

    # ---------------------------------------------------------------- use
    @property
    def conn(self) -> libvirt.virConnect:
        """The live connection, re-opened if the last one dropped."""
        with self._lock:
            if self._closed:
                # re-opening here would quietly resurrect a Host its user closed
                raise ConnectionFailed(
                    f"the connection to {self.uri.split('?')[0]} was closed: anyvirt.connect() again"
                )
            conn = self._conn
            if conn is not None and not self._dropped.is_set():
                try:
                    alive = conn.isAlive()
                except libvirt.libvirtError:
                    alive = 0
                if alive:
                    return conn
            if conn is not None:
                self._forget(conn)
                self.reconnects += 1
            reopening = self._opened_before
            self._conn = self._open()
            self._opened_before = True
            if reopening:  # also after attempts that failed while the daemon was down
                self._reconnected.set()
            return self._conn

    def _forget(self, conn: libvirt.virConnect) -> None:
        self._conn = None
        with suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with suppress(libvirt.libvirtError):
            conn.close()

    def mark_dropped(self) -> None:
        self._dropped.set()

    @contextmanager
    def call(self, what: str = "") -> Iterator[libvirt.virConnect]:
        """Yield the connection; translate libvirt errors, and notice a dropped connection."""
        conn = self.conn
        hook = self.after_reconnect
        if hook is not None and self._reconnected.is_set():
            self._reconnected.clear()  # before the hook, whose own calls come back here
            hook()
        try:
            yield conn
        except libvirt.libvirtError as exc:
            alive = _still_alive(conn)
            if not alive:
                self.mark_dropped()  # the next call opens a new connection
            if is_connection_error(exc) or not alive:
                raise ConnectionFailed(
                    f"{what}: connection to libvirt lost: {exc.get_error_message()}"
                ) from exc
            raise translate(exc, what) from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._forget(self._conn)
