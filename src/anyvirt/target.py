"""What a driver is asked to connect to: a parsed URI plus credentials.

Secrets are wrapped in :class:`Secret` from the moment they are read, so no
repr, log line or error message built from these objects can show them.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

from attrs import field, frozen

from anyvirt import validation
from anyvirt.errors import InvalidSpec
from anyvirt.model import Overcommit
from anyvirt.secret import Secret as Secret  # re-exported: the public name stays anyvirt.target.Secret
from anyvirt.secret import as_secret as as_secret

DEFAULT_CALL_TIMEOUT = 60.0


def secret_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A backend's keyword options with every secret-looking one (``token_value=``,
    ``api_secret=``) held as a :class:`Secret`: they enter as Secrets like ``password=``."""
    return {k: Secret(str(v)) if _looks_secret(k) and v is not None and not isinstance(v, Secret)
            else v for k, v in options.items()}


def _user(_inst: object, _attribute: Any, value: str | None) -> None:
    validation.USER_NAME.check_optional(value)


def _sendable(_inst: object, attribute: Any, value: Secret | None) -> None:
    if value is not None:
        validation.check_secret(value.reveal(), attribute.name)


@frozen
class Credentials:
    """Who to log in as. ``password`` and ``token`` are always :class:`Secret`."""

    username: str | None = field(default=None, validator=_user)
    password: Secret | None = field(default=None, converter=as_secret, validator=_sendable)
    token: Secret | None = field(default=None, converter=as_secret, validator=_sendable)


@frozen
class Target:
    """A connection request, as the driver sees it.

    ``scheme`` is the whole URI scheme (``libvirt+qemu+ssh``); ``backend`` its
    first part (``libvirt``); ``transport`` the rest (``qemu+ssh``) or "".
    ``query`` holds the URI's options minus the ones anyvirt consumes itself
    (``verify``, ``ca``, ``timeout``, ``overcommit``) and minus the secret-looking ones (``token_value=``),
    which are in ``query_secrets`` as :class:`Secret`; so are those of ``options``.
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
    options: Mapping[str, Any] = field(factory=dict, converter=secret_options)
    query_secrets: Mapping[str, Secret] = field(factory=dict)
    #: the credentials (``password``, ``token``) only the ``ANYVIRT_*`` environment gave: set
    #: for every connection of the process, not asked for this one
    ambient_credentials: frozenset[str] = frozenset()
    #: the caller's overcommit policy (keyword, ``?overcommit=``, profile, environment);
    #: None: the backend's default, else anyvirt's
    overcommit: Overcommit | None = None

    def option(self, key: str) -> Any:
        """A backend's own option: the keyword argument, else the URI's (a Secret if it
        looks like one), else None."""
        if key in self.options:
            return self.options[key]
        return self.query_secrets.get(key, self.query.get(key))

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
        qs = "&".join([*(f"{k}={_MASK if _looks_secret(k) else quote(v, safe='/')}"
                         for k, v in self.query.items()),
                       *(f"{k}={_MASK}" for k in self.query_secrets)])
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
_SECRET_WORDS = ("pass", "token", "secret", "pwd", "ticket", "cookie")


def _looks_secret(key: str) -> bool:
    """A backend's own option that holds a secret (``api_token=``, ``secret=``)
    is kept for the driver but never shown."""
    low = key.lower()
    if low.endswith(("name", "id")):
        return False  # a token's name or id (token_name=) says which, not what it is
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


_ENCODE_HINT = (
    "if the password holds a reserved character, percent-encode it in the URI "
    "('/' as %2F, '?' as %3F, '#' as %23, '@' as %40, '%' as %25), or pass password= instead"
)


def _userinfo_misplaced(parts: SplitResult) -> bool:
    """Whether an ``@`` outside the authority says that a password's reserved character
    (``/``, ``?``, ``#``) ended the authority early: ``vsphere://admin:2024/Spring!PW@vc``
    would otherwise be host ``admin``, port 2024, and the password would be the path."""
    if "@" in parts.path or "@" in parts.fragment:
        return True
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        # only a secret's value may hold a bare "@" (a token is user@realm!name=...); any
        # other "@" there must be %40, or a password's "?" could pass for the query
        if "@" in key or ("@" in value and not _looks_secret(unquote(key))):
            return True
    return False


def parse_uri(uri: str) -> tuple[str, dict[str, Any]]:
    """Split a URI into its scheme and the pieces a Target is built from.

    Passwords in the URI (``user:pw@host``) are accepted and moved straight
    into a Secret; the URI string itself is never stored. A password whose
    reserved characters are not percent-encoded is refused (with that hint)
    rather than guessed at, so it can never end up as a host, port or path that
    ``safe_uri`` and the logs would show. Every error message here is built
    without any part of the URI after its scheme.
    """
    if not isinstance(uri, str) or "://" not in uri:
        raise InvalidSpec("malformed URI: expected scheme://..., e.g. libvirt+qemu:///system")
    validation.URI.check(uri)  # urllib would drop a tab or line break in a password unseen
    named = uri.split("://", 1)[0]
    scheme_hint = repr(named) if named.isascii() and named.replace("+", "").isalnum() else "given"
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        # the message of urllib's errors can quote the URI: keep ours generic
        raise InvalidSpec(
            f"malformed URI for scheme {scheme_hint}: bad host or port; {_ENCODE_HINT}") from None
    scheme = parts.scheme.lower()
    if not scheme or any(not piece for piece in scheme.split("+")):
        raise InvalidSpec("malformed URI: empty scheme")
    if _userinfo_misplaced(parts):
        raise InvalidSpec(
            f"malformed URI for scheme {scheme_hint}: an '@' after the host part (write it as %40); "
            f"{_ENCODE_HINT}")
    if parts.fragment or uri.endswith("#"):
        raise InvalidSpec(f"anyvirt URIs take no #fragment; {_ENCODE_HINT}")
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
    out["query_secrets"] = {key: Secret(query.pop(key)) for key in list(query) if _looks_secret(key)}
    if "verify" in query:
        out["verify"] = parse_bool(query.pop("verify"), "verify")
    if "ca" in query:
        out["ca"] = query.pop("ca")
    if "overcommit" in query:
        out["overcommit"] = query.pop("overcommit")
    if "timeout" in query:
        raw = query.pop("timeout")
        try:
            value = float(raw)
        except ValueError:
            raise InvalidSpec(f"timeout must be a number of seconds, not {raw!r}") from None
        out["timeout"] = check_timeout(value)
    return out


#: a call timeout beyond a day is a mistake (and ``inf`` would make a hung server hang us)
MAX_CALL_TIMEOUT = 86400.0


def check_timeout(value: object) -> float:
    """A call timeout: a finite number of seconds, more than 0, at most a day."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(f"timeout must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_CALL_TIMEOUT:
        raise InvalidSpec(
            f"timeout must be a finite number of seconds above 0 and at most {MAX_CALL_TIMEOUT:g}, "
            f"not {value!r}")
    return seconds
