"""What a driver is asked to connect to: a parsed URI plus credentials.

Secrets are wrapped in :class:`Secret` from the moment they are read, so no
repr, log line or error message built from these objects can show them.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from attrs import field, frozen

from anyvirt.errors import InvalidSpec

DEFAULT_CALL_TIMEOUT = 60.0


class Secret:
    """A string that will not show itself. Call ``reveal()`` at the one place it is sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def _secret(value: Secret | str | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(str(value))


@frozen
class Credentials:
    """Who to log in as. ``password`` and ``token`` are always :class:`Secret`."""

    username: str | None = None
    password: Secret | None = field(default=None, converter=_secret)
    token: Secret | None = field(default=None, converter=_secret)


@frozen
class Target:
    """A connection request, as the driver sees it.

    ``scheme`` is the whole URI scheme (``libvirt+qemu+ssh``); ``backend`` its
    first part (``libvirt``); ``transport`` the rest (``qemu+ssh``) or "".
    ``query`` holds the URI's options minus the ones anyvirt consumes itself
    (``verify``, ``ca``, ``timeout``).
    """

    scheme: str
    backend: str
    transport: str = ""
    host: str = ""
    port: int | None = None
    path: str = ""
    query: Mapping[str, str] = field(factory=dict, repr=lambda q: _query_repr(q))
    credentials: Credentials = field(factory=Credentials)
    verify: bool = True
    ca: str | None = None
    timeout: float = DEFAULT_CALL_TIMEOUT
    options: Mapping[str, Any] = field(factory=dict)

    @property
    def safe_uri(self) -> str:
        """The URI without password or token: fit for reprs, logs and errors."""
        user = self.credentials.username
        netloc = ""
        if user:
            netloc = quote(user, safe="") + "@"
        if self.host:
            netloc += f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            netloc += f":{self.port}"
        qs = "&".join(f"{k}={_MASK if _looks_secret(k) else quote(v, safe='/')}"
                      for k, v in self.query.items())
        uri = f"{self.scheme}://{netloc}{self.path}"
        return f"{uri}?{qs}" if qs else uri

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for HTTPS backends: verified unless the caller turned it off."""
        if not self.verify:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        try:
            return ssl.create_default_context(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidSpec(f"the CA bundle {self.ca!r} cannot be read as PEM certificates: "
                              f"{exc.strerror or exc}") from exc


_MASK = "********"
_SECRET_WORDS = ("pass", "token", "secret", "pwd")


def _looks_secret(key: str) -> bool:
    """A backend's own query option that holds a secret (``api_token=``, ``secret=``)
    is kept for the driver but never shown."""
    low = key.lower()
    return any(word in low for word in _SECRET_WORDS)


def _query_repr(query: Mapping[str, str]) -> str:
    return repr({k: _MASK if _looks_secret(k) else v for k, v in query.items()})


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(value: str | bool, what: str) -> bool:
    if isinstance(value, bool):
        return value
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise InvalidSpec(f"{what} must be true or false, not {value!r}")


def parse_uri(uri: str) -> tuple[str, dict[str, Any]]:
    """Split a URI into its scheme and the pieces a Target is built from.

    Passwords in the URI (``user:pw@host``) are accepted and moved straight
    into a Secret; the URI string itself is never stored.
    """
    if not isinstance(uri, str) or "://" not in uri:
        raise InvalidSpec("malformed URI: expected scheme://..., e.g. libvirt+qemu:///system")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        # the message of urllib's errors can quote the URI: keep ours generic
        raise InvalidSpec(f"malformed URI for scheme {uri.split('://', 1)[0]!r}: bad host or port") from exc
    scheme = parts.scheme.lower()
    if not scheme or any(not piece for piece in scheme.split("+")):
        raise InvalidSpec("malformed URI: empty scheme")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    pieces: dict[str, Any] = {
        "host": parts.hostname or "",
        "port": port,
        "path": parts.path,
        "query": query,
        "username": unquote(parts.username) if parts.username else None,
        "password": Secret(unquote(parts.password)) if parts.password else None,
    }
    return scheme, pieces


def consume_query(query: dict[str, str]) -> dict[str, Any]:
    """Take anyvirt's own options out of a URI query.

    ``?password=`` and ``?token=`` are credentials like ``user:pw@``: they leave
    the query at once as Secrets, so ``safe_uri`` and reprs never carry them.
    """
    out: dict[str, Any] = {}
    for key in ("password", "token"):
        if key in query:
            out[key] = Secret(query.pop(key))
    if "verify" in query:
        out["verify"] = parse_bool(query.pop("verify"), "verify")
    if "ca" in query:
        out["ca"] = query.pop("ca")
    if "timeout" in query:
        raw = query.pop("timeout")
        try:
            value = float(raw)
        except ValueError:
            raise InvalidSpec(f"timeout must be a number of seconds, not {raw!r}") from None
        if value <= 0:
            raise InvalidSpec("timeout must be positive")
        out["timeout"] = value
    return out
