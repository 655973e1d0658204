"""libvirt errors -> anyvirt errors, decided by libvirt's error *code*.

Messages are libvirt's own (they name domains, volumes and paths, never
credentials: anyvirt never puts a password into a libvirt URI). The original
``libvirtError`` stays reachable as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from anyvirt.errors import (
    AlreadyExists,
    AnyvirtError,
    AuthenticationFailed,
    Cancelled,
    ConnectionFailed,
    InvalidSpec,
    InvalidState,
    NotFound,
    TaskFailed,
    Timeout,
)

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_DOMAIN_METADATA,
}
_EXISTS = {libvirt.VIR_ERR_DOM_EXIST, libvirt.VIR_ERR_STORAGE_VOL_EXIST}
_STATE = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_OPERATION_DENIED}
_UNSUPPORTED = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
}
_SPEC = {
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_INVALID_ARG,
}
_AUTH = {
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
}
#: codes meaning the connection itself is gone (the daemon died, the socket closed)
_CONNECTION = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
}
#: error domains of the transport: a SYSTEM_ERROR from these is a broken connection,
#: while a SYSTEM_ERROR from e.g. the storage driver is an I/O error on the host
_TRANSPORT_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}


def is_connection_error(exc: libvirt.libvirtError) -> bool:
    """True when ``exc`` says the connection is broken (so the next call must reconnect)."""
    code = exc.get_error_code()
    if code in _CONNECTION:
        return True
    return code == libvirt.VIR_ERR_SYSTEM_ERROR and exc.get_error_domain() in _TRANSPORT_DOMAINS


#: words of libvirt's "operation failed" errors that mean a name is taken (a concurrent
#: define of the same name: "domain 'x' already exists with uuid ...")
_TAKEN = "already exists"
#: a pool refresh while a volume is being built ("pool 'p' has asynchronous jobs running."):
#: transient, worth a short retry (see ``retry_busy_pool``)
POOL_BUSY = "asynchronous jobs running"


def is_pool_busy(exc: libvirt.libvirtError) -> bool:
    return POOL_BUSY in (exc.get_error_message() or "")


#: QEMU's monitor and channel sockets live under the driver's directories, in one named
#: after the domain (an embedded root's ``lib/qemu/domain-N-NAME/``), and a UNIX socket
#: path is short. A root too long for any name is refused when connecting
#: (``embedded.check_embed_root_length``); this is the rest: a root that leaves too little
#: room for this VM's name.
#: the longest path a UNIX socket can have (``sun_path`` holds 108 bytes with the NUL)
SOCKET_PATH_MAX = 107
_SOCKET_TOO_LONG = ("UNIX socket path", "too long")
SOCKET_PATH_HINT = (f"a UNIX socket path has at most {SOCKET_PATH_MAX} bytes, and libvirt makes "
                    "QEMU's in a directory named after the first 20 characters of the VM's name: "
                    "on the embedded QEMU, choose a shorter ?root= (or a shorter VM name)")


def _socket_path_too_long(code: int, text: str) -> bool:
    return code == libvirt.VIR_ERR_INTERNAL_ERROR and all(part in text for part in _SOCKET_TOO_LONG)


def translate(exc: libvirt.libvirtError, what: str = "") -> AnyvirtError:
    """The anyvirt error for a libvirt error (the caller raises it ``from exc``)."""
    code = exc.get_error_code()
    text = exc.get_error_message() or str(exc)
    message = f"{what}: {text}" if what else text
    if code in _NOT_FOUND:
        return NotFound(message)
    if code in _EXISTS or (code == libvirt.VIR_ERR_OPERATION_FAILED and _TAKEN in text):
        return AlreadyExists(message)
    if code in _AUTH:
        return AuthenticationFailed(message)
    if is_connection_error(exc):
        return ConnectionFailed(message)
    if code in _STATE:
        return InvalidState(message)
    if code in _UNSUPPORTED:
        # the daemon refused this for this domain (the connection declared the capability):
        # a refusal of the platform's, not a capability anyvirt lacks
        return InvalidState(f"{message} (libvirt cannot do this here)")
    if code in _SPEC:
        return InvalidSpec(message)
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return Timeout(message)
    if code == libvirt.VIR_ERR_OPERATION_ABORTED:
        return Cancelled(message)
    if _socket_path_too_long(code, text):
        # the start of a VM fails on the length of a path the caller chose: bad input
        return InvalidSpec(f"{message}; {SOCKET_PATH_HINT}")
    return TaskFailed(message, fault=f"libvirt error {code}")


@contextmanager
def libvirt_errors(what: str = "") -> Iterator[None]:
    """Run a block of libvirt calls, raising anyvirt errors instead of ``libvirtError``."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, what) from exc
