"""``anyvirt.connect``: from a URI (or profile, or nothing) to a connected Host.

Where each setting comes from, first match wins: keyword arguments, the URI,
the named profile, then ``ANYVIRT_*`` environment variables. Never a default
in code for a credential.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import TYPE_CHECKING, Any

from anyvirt import capacity, profiles, registry
from anyvirt.errors import InvalidSpec
from anyvirt.host import Host
from anyvirt.model import Overcommit
from anyvirt.target import (
    DEFAULT_CALL_TIMEOUT,
    Credentials,
    Secret,
    Target,
    as_secret,
    check_timeout,
    consume_query,
    parse_bool,
    parse_uri,
    secret_options,
)

if TYPE_CHECKING:
    from anyvirt.driver import Driver

log = logging.getLogger("anyvirt")

FALLBACK_URI = "memory://default"
# Backends asked, in order, for a local default when connect() gets no URI.
DEFAULT_BACKENDS = ("libvirt",)


def default_uri() -> str:
    """The URI ``connect()`` uses with no arguments: the local QEMU if there is one."""
    for name in DEFAULT_BACKENDS:
        try:
            driver = registry.driver_for(name)
            uri = driver.default_uri()
        except registry.UnknownBackend:
            continue
        except Exception as exc:  # a broken optional backend must not break the fallback
            log.warning("backend %s offers no default: %s", name, exc)
            continue
        if uri:
            return uri
    return FALLBACK_URI


def _resolve_uri(uri: str | Secret | None, profile: dict[str, Any]) -> str:
    if isinstance(uri, Secret):
        uri = uri.reveal()
    if uri is not None:
        if not uri:  # a forgotten variable must not quietly become the local default
            raise InvalidSpec("the URI is empty: leave it out (None) to use the profile, "
                              "$ANYVIRT_URI or the local default")
        return uri
    if profile.get("uri"):
        return str(profile["uri"])
    if os.environ.get(profiles.ENV_URI):
        return os.environ[profiles.ENV_URI]
    return default_uri()


def build_target(
    uri: str | Secret | None = None,
    *,
    profile: str | None = None,
    username: str | None = None,
    password: str | Secret | None = None,
    token: str | Secret | None = None,
    verify: bool | str | None = None,
    ca: str | None = None,
    timeout: float | None = None,
    overcommit: Overcommit | str | None = None,
    **options: Any,
) -> Target:
    """Parse and merge everything into a :class:`Target` (no connection is made).

    ``uri`` may come as a :class:`Secret` (``connect`` passes it so, as it can hold a
    password); the secret-looking ``options`` become Secrets at once."""
    password, token = as_secret(password), as_secret(token)
    options = secret_options(options)
    profile = profile or os.environ.get(profiles.ENV_PROFILE) or None
    prof = profiles.load_profile(profile) if profile else {}
    env = profiles.from_environment()
    scheme, pieces = parse_uri(_resolve_uri(uri, prof))
    del uri
    query: dict[str, str] = pieces["query"]
    own = consume_query(query)

    def pick(name: str, explicit: Any, from_uri: Any = None) -> Any:
        for value in (explicit, from_uri, prof.get(name), env.get(name)):
            if value is not None:
                return value
        return None

    given = {"password": (password, pieces["password"] or own.get("password")),
             "token": (token, own.get("token"))}
    creds = Credentials(
        username=pick("username", username, pieces["username"]),
        password=pick("password", *given["password"]),
        token=pick("token", *given["token"]),
    )
    # what only the ambient $ANYVIRT_* environment gave, not the caller for this connection
    ambient = frozenset(name for name, (explicit, from_uri) in given.items()
                        if explicit is None and from_uri is None and prof.get(name) is None
                        and env.get(name) is not None)
    verify_value = pick("verify", verify, own.get("verify"))
    overcommit_value = pick("overcommit", overcommit, own.get("overcommit"))
    timeout_value = pick("timeout", timeout, own.get("timeout"))
    if timeout_value is not None:
        timeout_value = check_timeout(timeout_value)
    backend, _, transport = scheme.partition("+")
    return Target(
        scheme=scheme,
        backend=backend,
        transport=transport,
        host=pieces["host"],
        port=pieces["port"],
        path=pieces["path"],
        query=query,
        credentials=creds,
        verify=True if verify_value is None else parse_bool(verify_value, "verify"),
        ca=pick("ca", ca, own.get("ca")),
        timeout=float(timeout_value) if timeout_value is not None else DEFAULT_CALL_TIMEOUT,
        options=options,
        query_secrets=own["query_secrets"],
        ambient_credentials=ambient,
        overcommit=None if overcommit_value is None
        else capacity.parse_overcommit(overcommit_value, "overcommit"),
    )


#: connect()'s own keyword arguments and anyvirt's own URI options, known for every backend
CONNECT_KEYWORDS = frozenset({"profile", "username", "password", "token", "verify", "ca", "timeout",
                              "overcommit"})
URI_OPTIONS = frozenset({"verify", "ca", "timeout", "password", "token", "overcommit"})


def check_credentials(target: Target, driver_cls: type[Driver]) -> None:
    """Refuse a password or token given to a backend that never logs in (``memory://``,
    ``virtualbox://``): dropped unread, it would let a caller believe it was checked. The
    ``ANYVIRT_*`` environment is ambient, set for other backends too: a credential that is
    only that is left alone."""
    if driver_cls.takes_credentials:
        return
    for kind in ("password", "token"):
        if getattr(target.credentials, kind) is not None and kind not in target.ambient_credentials:
            raise InvalidSpec(
                f"{target.scheme}:// does not log in and takes no {kind}: leave it out of the "
                "URI, the keyword arguments and the profile"
            )


def check_options(target: Target, driver_cls: type[Driver]) -> None:
    """Refuse an option the backend does not read, naming the closest one it does: a typo
    such as ``pasword=`` must not quietly fall back to ``$ANYVIRT_PASSWORD``."""
    for kind, given, known in (
        ("keyword option", set(target.options), CONNECT_KEYWORDS | driver_cls.connect_options),
        ("URI option", {*target.query, *target.query_secrets}, URI_OPTIONS | driver_cls.uri_options),
    ):
        for option in sorted(given - known):
            close = difflib.get_close_matches(option, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidSpec(
                f"{target.scheme}:// has no {kind} {option!r}{hint} "
                f"(it takes: {', '.join(sorted(known))})"
            )


#: libvirt's own URI schemes (``qemu:///system``): anyvirt reaches them as ``libvirt+<scheme>``
LIBVIRT_DRIVERS = frozenset({"qemu", "test", "xen", "lxc", "vbox", "bhyve", "ch", "vz",
                             "openvz", "hyperv", "esx", "vpx", "libxl"})
#: what else people type for a backend's scheme
SCHEME_ALIASES = {"kvm": "libvirt+qemu", "pve": "proxmox", "vcenter": "vsphere",
                  "vmware": "vsphere"}


def _driver_for(target: Target) -> type[Driver]:
    """The backend's driver; an unknown scheme that is another tool's name for one of ours
    gets the URI to type instead."""
    try:
        return registry.driver_for(target.scheme)
    except registry.UnknownBackend as unknown:
        backend = target.scheme.split("+", 1)[0].lower()
        if backend in LIBVIRT_DRIVERS:
            fixed = f"libvirt+{target.scheme}"
        elif backend in SCHEME_ALIASES:
            fixed = SCHEME_ALIASES[backend] + target.scheme[len(backend):]
        else:
            raise
        rest = target.safe_uri.split("://", 1)[1]
        raise registry.UnknownBackend(f"{unknown}; did you mean {fixed}://{rest}?") from None


def connect(
    uri: str | None = None,
    *,
    profile: str | None = None,
    username: str | None = None,
    password: str | Secret | None = None,
    token: str | Secret | None = None,
    verify: bool | str | None = None,
    ca: str | None = None,
    timeout: float | None = None,
    overcommit: Overcommit | str | None = None,
    **options: Any,
) -> Host:
    """Connect to a virtualization platform and return its :class:`Host`.

    ``uri`` picks the backend by scheme (``libvirt+qemu:///system``,
    ``vsphere://user@vc``, ``esxi://root@esx1``, ``proxmox://...``,
    ``virtualbox://``, ``memory://name``). With no URI: the profile's, then
    ``$ANYVIRT_URI``, then the local QEMU/KVM where the libvirt backend is
    installed, else ``memory://default``.

    ``overcommit`` (an :class:`Overcommit` or its text, ``cpu=8,counts=defined``) may
    also come from the URI (``?overcommit=``), the profile or ``$ANYVIRT_OVERCOMMIT``;
    else the backend's default, else ``Overcommit()``: 4 vCPUs per CPU, no memory
    overcommit, powered-on VMs count.
    """
    # first of all, before anything can fail: the plain texts become Secrets, so no frame of
    # ours keeps one for a traceback (pytest --showlocals, Sentry) to capture. The URI may
    # carry a password too: only parse_uri() sees its text.
    password, token = as_secret(password), as_secret(token)
    options = secret_options(options)
    held_uri = None if uri is None else Secret(uri)
    del uri
    if overcommit is not None and not isinstance(overcommit, Overcommit | str):
        raise InvalidSpec(f"overcommit must be an anyvirt.Overcommit or its text, "
                          f"not {type(overcommit).__name__}")
    target = build_target(
        held_uri, profile=profile, username=username, password=password, token=token,
        verify=verify, ca=ca, timeout=timeout, overcommit=overcommit, **options,
    )
    driver_cls = _driver_for(target)
    check_options(target, driver_cls)
    check_credentials(target, driver_cls)
    log.debug("connecting to %s", target.safe_uri)
    driver = driver_cls.open(target)
    return Host(driver, overcommit=target.overcommit or driver.default_overcommit() or Overcommit())
