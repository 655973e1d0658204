"""One logged-in SOAP session to a vCenter or ESXi host.

Why a class of our own rather than ``pyVim.connect.SmartConnect``: SmartConnect
negotiates the API version over a separate HTTP request that has no timeout,
and it gives no place to re-login. Here every request goes through one
``SoapStubAdapter`` built with the target's TLS context and a per-call socket
timeout, so an unreachable, killed or hung server ends in ``ConnectionFailed``
instead of a hang. An expired or dropped session (``NotAuthenticated``) logs in
again, once, through the kit's :class:`~anyvirt.kit.session.Relogin`; the call
is then repeated only if it is a read, because a write may be the one thing
the caller must never see done twice.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

from anyvirt.errors import AuthenticationFailed, ConnectionFailed, InvalidSpec
from anyvirt.kit.errors import without_frames
from anyvirt.kit.session import Relogin
from anyvirt.target import Target
from anyvirt_vsphere.errors import translate
from anyvirt_vsphere.sdk import SoapStubAdapter, vim

T = TypeVar("T")

#: vSphere 6.5's API: understood by every supported vCenter/ESXi and by vcsim.
API_VERSION = "vim.version.version11"
DEFAULT_PORT = 443
DEFAULT_HTTP_PORT = 80


def _tls_context(target: Target) -> ssl.SSLContext:
    """The target's TLS context; an unreadable ``?ca=`` bundle is the caller's mistake."""
    try:
        return target.ssl_context()
    except (OSError, ssl.SSLError) as exc:
        raise InvalidSpec(f"the CA bundle {target.ca!r} cannot be used: {exc}") from exc


#: errors that mean the connection broke after a request may have been sent: a pooled
#: connection the server had closed (a restart), a reset, an answer cut short or never
#: come. A refused connection or a TLS failure is not one: nothing was sent.
_LOST = (
    http.client.RemoteDisconnected,  # also a ConnectionResetError
    http.client.IncompleteRead,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    socket.timeout,
)


def connection_lost(exc: BaseException) -> bool:
    return isinstance(exc, _LOST)


class Session:
    """The stub, the service content and the login, with re-login built in."""

    def __init__(self, target: Target) -> None:
        self.target = target
        #: ``vsphere+http://`` (plain HTTP, e.g. a simulator started without TLS); else HTTPS
        self.plain_http = target.transport == "http"
        self.port = target.port or (DEFAULT_HTTP_PORT if self.plain_http else DEFAULT_PORT)
        self.timeout = target.timeout
        self.ssl_context = None if self.plain_http else _tls_context(target)
        self._relogin = Relogin(
            self._login,
            expired=lambda exc: isinstance(exc, vim.fault.NotAuthenticated),
            translate=translate,
            check_open=self.check_open,
            lost=connection_lost,
        )
        self.stub = SoapStubAdapter(
            host=target.host,
            port=-self.port if self.plain_http else self.port,  # pyVmomi: negative port = HTTP
            path="/sdk",
            version=API_VERSION,
            sslContext=self.ssl_context,
            httpConnectionTimeout=self.timeout,
            connectionPoolTimeout=-1,
        )
        self.service_instance = vim.ServiceInstance("ServiceInstance", self.stub)
        self.content: Any = None
        self.logged_in = False
        self.closed = False

    # ------------------------------------------------------------------ login
    @property
    def generation(self) -> int:
        """Bumped on every login; caches keyed by it go stale."""
        return self._relogin.generation

    def open(self) -> Session:
        """Fetch the service content and log in; raise ConnectionFailed/AuthenticationFailed."""
        try:
            self.content = self.service_instance.RetrieveContent()
        except Exception as exc:
            raise translate(exc, f"connecting to {self.target.safe_uri}") from exc
        self.login()
        return self

    def login(self) -> None:
        self._relogin.login()

    def _login(self) -> None:
        creds = self.target.credentials
        if not creds.username or creds.password is None:
            raise AuthenticationFailed(
                f"{self.target.safe_uri}: vSphere needs a user name and a password "
                "(user@host in the URI, password= or the ANYVIRT_PASSWORD environment variable)"
            )
        self.stub.cookie = ""  # a dead session's cookie must not ride along
        try:
            self.content.sessionManager.Login(creds.username, creds.password.reveal(), None)
        except vim.fault.InvalidLogin as exc:
            raise AuthenticationFailed(
                f"{self.target.safe_uri}: the server refused the user name or password"
            ) from without_frames(exc)
        except Exception as exc:
            raise translate(exc, f"logging in to {self.target.safe_uri}") from without_frames(exc)
        self.logged_in = True

    def close(self) -> None:
        """Log out (best effort: a dead server must not make close() raise) and drop the pool.

        A closed session never logs in again: calls after close() raise
        ``ConnectionFailed`` instead of quietly opening a new server session
        that nobody would ever log out.
        """
        self.closed = True
        if self.logged_in and self.content is not None:
            # best effort: the session dies with the server anyway
            with contextlib.suppress(Exception):
                self.content.sessionManager.Logout()
        self.logged_in = False
        with contextlib.suppress(Exception):
            self.stub.DropConnections()

    # ------------------------------------------------------------------ calls
    def call(self, fn: Callable[[], T], what: str, *, read: bool) -> T:
        """Run ``fn`` (one or a few SOAP calls), re-logging in once on NotAuthenticated.

        ``read`` says whether ``fn`` may be repeated after the re-login.
        """
        return self._relogin.call(fn, what, idempotent=read)

    def check_open(self, what: str) -> None:
        if self.closed:
            raise ConnectionFailed(f"{what}: the connection to {self.target.safe_uri} has been closed")

    # ------------------------------------------------------------------ helpers
    def ref(self, kind: type, moid: str) -> Any:
        """A managed object reference bound to this session's stub."""
        return kind(moid, self.stub)

    @property
    def is_vcenter(self) -> bool:
        return bool(self.content is not None and self.content.about.apiType == "VirtualCenter")

    @property
    def cookie(self) -> str:
        """The session cookie (``vmware_soap_session="..."``), for the datastore HTTP interface."""
        return str(self.stub.cookie)
