"""One logged-in connection to a PVE API endpoint, on proxmoxer.

Two ways in, as PVE has them:

* a password: proxmoxer fetches a ticket and CSRF token, and renews the
  ticket after an hour (tickets expire after two); a 401 anyway (the ticket
  was revoked, the cluster restarted), or a refused renewal, logs in again
  once (the kit's ``Relogin``) and repeats the request. Repeating is safe for
  writes too: PVE checks the ticket before it does anything, so the refused
  request did nothing;
* an API token (``PVEAPIToken=user@realm!name=secret`` header, no CSRF), from
  ``?token_name=&token_value=`` or the keyword arguments of the same names, or
  ``token="user@realm!name=secret"`` (also ``$ANYVIRT_TOKEN``).

TLS is verified unless the caller turned it off; ``?ca=`` trusts a bundle.

Closing waits (at most ``CLOSE_WAIT`` seconds) for work that may leave something to
undo: a create that timed out is still cleaning up after itself in its worker thread
when the caller's ``with`` block ends, and a closed session would leave its VM on PVE.
Every request carries the call timeout. Path segments are percent-encoded
here, once, so no caller's string reaches a URL as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException

from anyvirt.errors import AuthenticationFailed, ConnectionFailed, InvalidSpec
from anyvirt.kit.errors import without_frames
from anyvirt.kit.session import Relogin
from anyvirt.target import Secret, Target
from anyvirt_proxmox.errors import translate

log = logging.getLogger("anyvirt.proxmox")

DEFAULT_PORT = 8006
#: at most this long close() waits for pending work to finish or undo itself: a task's stop
#: (10 s grace) plus the cleanup's own bound, with room
CLOSE_WAIT = 150.0
#: how long a create that finished after its caller gave up holds close() for the undo the
#: caller's side runs next (tasks.Task's rollback); bounded, as a plain cancel runs none
UNDO_GRACE = 10.0
OPTIONS = frozenset({"token_name", "token_value"})


def _option(target: Target, key: str) -> str | None:
    value = target.option(key)
    return None if value is None or isinstance(value, Secret) else str(value)


def _secret_option(target: Target, key: str) -> Secret | None:
    value = target.option(key)
    return None if value is None else value if isinstance(value, Secret) else Secret(str(value))


def _header_safe(text: str) -> bool:
    """Whether ``text`` can go into the token's HTTP header: printable ASCII, no blank. PVE's
    token ids and secrets are that; http.client would fail on anything beyond Latin-1 with an
    error that holds the whole header, secret included."""
    return all("!" <= ch <= "~" for ch in text)


def _split_token(whole: Secret) -> tuple[str | None, Secret]:
    """``user@realm!name=secret`` (PVE's whole form) -> ("user@realm!name", secret); any other
    text is the secret alone. Raises nothing: no frame holding the text reaches a traceback."""
    tokenid, eq, secret = whole.reveal().partition("=")
    if eq and "!" in tokenid:
        return tokenid, Secret(secret)
    return None, whole


def _token_of(target: Target, user: str) -> tuple[str | None, Secret | None]:
    """The API token's name and secret, from ``token_name=``/``token_value=`` or ``token=``;
    checked before any request is made."""
    name = _option(target, "token_name")
    secret = _secret_option(target, "token_value")
    if secret is None and target.credentials.token:
        tokenid, secret = _split_token(target.credentials.token)
        if tokenid is not None:
            token_user, _, token_name = tokenid.partition("!")
            if token_user != user:
                raise InvalidSpec("the API token belongs to another user than the URI's")
            name = name if name is not None else token_name
    if secret is None:
        return name, None
    if not name:
        raise InvalidSpec("an API token needs token_name= (the part after '!' in user@realm!name)")
    if not _header_safe(name) or not _header_safe(user):
        raise InvalidSpec("the API token's name and user must be printable ASCII without blanks: "
                          "they are sent in an HTTP header")
    if not _header_safe(secret.reveal()):
        raise InvalidSpec("the API token's secret (token_value) holds a character that is not "
                          "printable ASCII: PVE's token secrets are UUIDs; check what was pasted")
    return name, secret


def _verify(target: Target) -> bool | str:
    """requests' ``verify``: False, True, or the CA bundle, which the core's TLS setup
    (``Target.ssl_context``) checks first, so a bad ``?ca=`` is InvalidSpec naming the file and
    why, as on every backend. The absolute path: requests must not read another file later
    if the working directory changes."""
    if not target.verify:
        return False
    target.ssl_context()
    return os.path.abspath(target.ca) if target.ca else True


def _expired(exc: BaseException) -> bool:
    """A ticket PVE no longer takes: a 401, or proxmoxer's renewal refused."""
    return isinstance(exc, AuthenticationError) or (
        isinstance(exc, ResourceException) and exc.status_code == 401)


class Session:
    """The proxmoxer API object plus login, re-login and error translation."""

    def __init__(self, target: Target) -> None:
        if not target.host:
            raise InvalidSpec("proxmox:// needs a host, e.g. proxmox://root%40pam@pve1:8006")
        user = target.credentials.username
        if not user or "@" not in user:
            raise InvalidSpec("proxmox:// needs a user with its realm, e.g. proxmox://root%40pam@pve1 "
                              "(or username='root@pam')")
        self.target = target
        self.user = user
        self.port = target.port or DEFAULT_PORT
        self._token_name, self._token = _token_of(target, user)
        if self._token is None and not target.credentials.password:
            raise AuthenticationFailed(f"no password or API token given for {target.safe_uri}")
        self._verify = _verify(target)
        self._api: ProxmoxAPI | None = None
        self._closed = threading.Event()
        self._pending: list[str] = []  # what may still leave something to undo
        self._idle = threading.Condition()
        self.logins = 0
        self._relogin = Relogin(self._login, expired=_expired, translate=translate,
                                check_open=self._check_open)

    @property
    def tls_verify(self) -> bool | str:
        """What every request verifies TLS with: False, True, or a CA bundle's path."""
        return self._verify

    @property
    def uses_token(self) -> bool:
        return self._token is not None

    # ------------------------------------------------------------ login
    def open(self) -> Session:
        self._relogin.login()
        return self

    def _login(self) -> None:
        what = f"logging in to {self.target.safe_uri}"
        try:
            # in a frame of its own: the API object, which holds the credential, is never a
            # local of this frame, which a failed login's traceback keeps
            api = self._logged_in_api()
        except AuthenticationError as exc:
            # proxmoxer says only "... code: N"; 401 is PVE refusing the password
            code = str(exc).rsplit("code:", 1)[-1].strip()
            err = (AuthenticationFailed(f"{what}: PVE refused the user or password (HTTP 401)")
                   if code == "401" else ConnectionFailed(f"{what}: the login answered HTTP {code}"))
            raise err from exc.with_traceback(None)  # no frame holding the password survives
        except Exception as exc:
            raise translate(exc, what) from exc.with_traceback(None)
        if self._api is not None:
            log.info("logged in again to %s", self.target.safe_uri)
        self._api = api
        self.logins += 1

    def _logged_in_api(self) -> ProxmoxAPI:
        if self._token is not None:
            api = ProxmoxAPI(self.target.host, port=self.port, user=self.user,
                             token_name=self._token_name, token_value=self._token.reveal(),
                             verify_ssl=self._verify, timeout=self.target.timeout)
            api.version.get()  # a token is only checked when used
            return api
        password = self.target.credentials.password
        assert password is not None
        return ProxmoxAPI(self.target.host, port=self.port, user=self.user,
                          password=password.reveal(), verify_ssl=self._verify,
                          timeout=self.target.timeout)

    def _check_open(self, what: str) -> None:
        if self._closed.is_set():
            raise ConnectionFailed(f"{what}: the connection to {self.target.safe_uri} was closed")

    @contextlib.contextmanager
    def undoable(self, what: str) -> Iterator[None]:
        """Run work that may leave something to undo (a create, a clone, a removal): close()
        waits for it to end."""
        token = self.hold(what)
        try:
            yield
        finally:
            self.release(token)

    def hold(self, what: str) -> str:
        """Make close() wait for ``what`` until :meth:`release` (or its timer) lets go."""
        with self._idle:
            self._pending.append(what)
        return what

    def release(self, what: str) -> None:
        with self._idle:
            if what in self._pending:
                self._pending.remove(what)
            self._idle.notify_all()

    def hold_for(self, what: str, seconds: float) -> None:
        """Hold close() for ``what`` at most ``seconds`` (or until released earlier)."""
        token = self.hold(what)
        timer = threading.Timer(seconds, self.release, (token,))
        timer.daemon = True
        timer.start()

    def close(self, wait: float = CLOSE_WAIT) -> None:
        with self._idle:
            if self._pending:
                log.info("closing %s: waiting up to %g s for %s", self.target.safe_uri, wait,
                         "; ".join(self._pending))
            if not self._idle.wait_for(lambda: not self._pending, timeout=wait):
                log.error("closing %s with work still under way after %g s (%s): what it made may "
                          "be left on Proxmox VE; check for it and remove it by hand",
                          self.target.safe_uri, wait, "; ".join(self._pending))
        self._closed.set()
        api, self._api = self._api, None
        if api is not None:
            api._store["session"].close()

    @property
    def native(self) -> ProxmoxAPI:
        self._check_open("using the connection")
        if self._api is None:
            raise ConnectionFailed(f"not logged in to {self.target.safe_uri}")
        return self._api

    # ------------------------------------------------------------ requests
    def call(self, method: str, path: tuple[object, ...], what: str, **params: Any) -> Any:
        """``method`` on the API path made of ``path`` segments (each percent-encoded), with
        ``params`` as query (GET, DELETE) or form (POST, PUT). Returns PVE's ``data``."""
        relative = "/".join(quote(str(seg), safe="") for seg in path)
        values = {k: _wire(v) for k, v in params.items() if v is not None}
        # idempotent: a request met by an expired ticket was refused before PVE did anything
        return self._relogin.call(lambda: _send(self.native, method, relative, values), what,
                                  idempotent=True)

    def upload(self, path: tuple[object, ...], body: Any, what: str) -> Any:
        """POST a streamed multipart ``body`` (with ``content_type``) to ``path``. A stream cannot
        be sent twice, so an expired ticket here is ConnectionFailed, not repeated."""
        relative = "/".join(quote(str(seg), safe="") for seg in path)

        def send() -> Any:
            session = self.native._store["session"]
            auth = session.auth
            # past proxmoxer's request(), which wants form fields as a dict; its auth still signs
            response = requests.Session.request(
                session, "POST", f"{self.native._store['base_url']}/{relative}", data=body,
                headers={"Content-Type": body.content_type}, cookies=auth.get_cookies(),
                timeout=self.target.timeout, verify=auth.verify_ssl)
            if response.status_code >= 400:
                raise ResourceException(response.status_code, response.reason, response.reason,
                                        errors=_errors_of(response))
            return response.json().get("data")

        return self._relogin.call(send, what, idempotent=False)

    def get(self, path: tuple[object, ...], what: str, **params: Any) -> Any:
        return self.call("GET", path, what, **params)

    def post(self, path: tuple[object, ...], what: str, **params: Any) -> Any:
        return self.call("POST", path, what, **params)

    def put(self, path: tuple[object, ...], what: str, **params: Any) -> Any:
        return self.call("PUT", path, what, **params)

    def delete(self, path: tuple[object, ...], what: str, **params: Any) -> Any:
        return self.call("DELETE", path, what, **params)


def _errors_of(response: requests.Response) -> Any:
    with contextlib.suppress(ValueError):
        return response.json().get("errors")
    return None


def _wire(value: Any) -> Any:
    """PVE booleans are 0/1; everything else goes as text."""
    if isinstance(value, bool):
        return 1 if value else 0
    return value


def _send(api: ProxmoxAPI, method: str, relative: str, values: dict[str, Any]) -> Any:
    """Send the request; a :class:`Secret` among ``values`` (an identity's ``cipassword``) is
    revealed only in the call that sends it, and a failure keeps no frame of the SDK's, whose
    locals hold the revealed value."""
    if not any(isinstance(value, Secret) for value in values.values()):
        return _request(api, method, relative, values)
    try:
        return _request(api, method, relative, {
            key: value.reveal() if isinstance(value, Secret) else value
            for key, value in values.items()})
    except Exception as exc:
        raise without_frames(exc)  # noqa: B904 - the same error, its frames dropped


def _request(api: ProxmoxAPI, method: str, relative: str, values: dict[str, Any]) -> Any:
    resource = api(relative)
    if method == "GET":
        return resource.get(**values)
    if method == "POST":
        return resource.post(**values)
    if method == "PUT":
        return resource.put(**values)
    if method == "DELETE":
        return resource.delete(**values)
    raise ValueError(f"unknown HTTP method {method}")
