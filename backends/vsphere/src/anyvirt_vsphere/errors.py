"""vSphere faults and transport errors, translated into anyvirt's error tree.

pyVmomi raises its faults as exceptions (``vim.fault.InvalidLogin``,
``vmodl.fault.ManagedObjectNotFound``, ...) and lets socket, TLS and HTTP
errors through untouched. Every call the driver makes goes through
:func:`translate` so callers see one error tree, with the original chained as
``__cause__``. Messages are built from fault types and the server's own fault
text, never from request bodies, so no secret can leak into them.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any

from anyvirt.errors import (
    AlreadyExists,
    AnyvirtError,
    AuthenticationFailed,
    CapacityExceeded,
    ConnectionFailed,
    InvalidSpec,
    InvalidState,
    NotFound,
)
from anyvirt_vsphere.sdk import vim, vmodl

TRUST_HINT = (
    "add ?ca=/path/to/ca.pem to the URI to trust the server's certificate authority, "
    "or ?verify=false to skip verification (only for test servers)"
)


def fault_type(fault: Any) -> str:
    """The vSphere fault's own short name (``InvalidPowerState``), for messages and ``TaskFailed.fault``."""
    name = getattr(fault, "_wsdlName", None) or type(fault).__name__
    return str(name)


def fault_message(fault: Any) -> str:
    """The server's text for a fault: ``msg``, else the first localized message, else its type."""
    msg = getattr(fault, "msg", None) or ""
    if not msg:
        for item in getattr(fault, "faultMessage", None) or ():
            text = getattr(item, "message", "")
            if text:
                msg = text
                break
    text = str(msg) or fault_type(fault)
    detail = getattr(fault, "invalidProperty", None) or getattr(fault, "name", None)
    if isinstance(detail, str) and detail and detail not in text:
        text += f" ({detail})"  # InvalidArgument's property, InvalidName's name, ...
    return text


# Checked in order: the first matching class decides the anyvirt error.
_FAULT_MAP: tuple[tuple[type[BaseException], type[AnyvirtError]], ...] = (
    (vim.fault.InvalidLogin, AuthenticationFailed),
    (vim.fault.NotAuthenticated, AuthenticationFailed),
    (vim.fault.NoPermission, AuthenticationFailed),
    (vmodl.fault.ManagedObjectNotFound, NotFound),
    (vim.fault.NotFound, NotFound),
    (vim.fault.FileNotFound, NotFound),
    (vim.fault.DuplicateName, AlreadyExists),
    (vim.fault.AlreadyExists, AlreadyExists),
    (vim.fault.FileAlreadyExists, AlreadyExists),
    (vim.fault.InsufficientResourcesFault, CapacityExceeded),
    (vim.fault.InvalidPowerState, InvalidState),
    (vim.fault.InvalidState, InvalidState),
    (vim.fault.TaskInProgress, InvalidState),
    (vim.fault.ToolsUnavailable, InvalidState),
    (vim.fault.InvalidName, InvalidSpec),
    (vim.fault.InvalidVmConfig, InvalidSpec),
    (vim.fault.InvalidDeviceSpec, InvalidSpec),
    (vmodl.fault.InvalidArgument, InvalidSpec),
    (vmodl.fault.InvalidRequest, InvalidSpec),
    (vmodl.fault.RequestCanceled, AnyvirtError),
)


def translate(exc: BaseException, what: str) -> AnyvirtError:
    """The anyvirt error for ``exc`` raised while doing ``what`` (caller chains it)."""
    if isinstance(exc, AnyvirtError):
        return exc
    if isinstance(exc, vmodl.fault.NotSupported | vmodl.fault.NotImplemented):
        # the server refused this for this object (the capability itself was declared)
        return InvalidState(f"{what}: {fault_message(exc)} (vSphere cannot do this here)")
    if isinstance(exc, vmodl.MethodFault):
        for fault_cls, error_cls in _FAULT_MAP:
            if isinstance(exc, fault_cls):
                return error_cls(f"{what}: {fault_message(exc)} ({fault_type(exc)})")
        return AnyvirtError(f"{what}: {fault_message(exc)} ({fault_type(exc)})")
    return transport_error(exc, what)


def transport_error(exc: BaseException, what: str) -> AnyvirtError:
    """Network-level failures: TLS, refused, reset, timed out, HTTP garbage."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectionFailed(
            f"{what}: the server's TLS certificate is not trusted "
            f"({exc.verify_message or 'verification failed'}); {TRUST_HINT}"
        )
    if isinstance(exc, socket.timeout | TimeoutError):
        # an unanswered call is a lost connection to the caller, not a slow operation
        return ConnectionFailed(f"{what}: no answer from the server within the call timeout")
    if isinstance(exc, ssl.SSLError | OSError | http.client.HTTPException):
        return ConnectionFailed(f"{what}: {type(exc).__name__}: {exc}")
    return AnyvirtError(f"{what}: {type(exc).__name__}: {exc}")


def is_transport_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError | http.client.HTTPException)
