"""vSphere faults and transport errors, translated into anyvirt's error tree.

pyVmomi raises its faults as exceptions (``vim.fault.InvalidLogin``,
``vmodl.fault.ManagedObjectNotFound``, ...) and lets socket, TLS and HTTP
errors through untouched. Every call the driver makes goes through
:func:`translate` so callers see one error tree, with the original chained as
``__cause__``. Messages are built from fault types and the server's own fault
text, never from request bodies, so no secret can leak into them (and the
kit's table scrubs anything secret-looking that a server might echo).
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
from anyvirt.kit.errors import ErrorTable, Rule
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


_FAULT = "{what}: {message} ({type})"
_TRANSPORT = "{what}: {type}: {message}"


def _message(exc: BaseException) -> str:
    return fault_message(exc) if isinstance(exc, vmodl.MethodFault) else str(exc)


def _fields(exc: BaseException) -> dict[str, object]:
    return {"type": fault_type(exc) if isinstance(exc, vmodl.MethodFault) else type(exc).__name__}


def _fault(fault: type[BaseException], error: type[AnyvirtError]) -> Rule:
    return Rule(error, types=(fault,), template=_FAULT)


#: Checked in order: the first matching rule decides the anyvirt error.
TABLE = ErrorTable(
    [
        # the server refused this for this object (the capability itself was declared)
        Rule(InvalidState, types=(vmodl.fault.NotSupported, vmodl.fault.NotImplemented),
             template="{what}: {message} (vSphere cannot do this here)"),
        _fault(vim.fault.InvalidLogin, AuthenticationFailed),
        _fault(vim.fault.NotAuthenticated, AuthenticationFailed),
        _fault(vim.fault.NoPermission, AuthenticationFailed),
        _fault(vmodl.fault.ManagedObjectNotFound, NotFound),
        _fault(vim.fault.NotFound, NotFound),
        _fault(vim.fault.FileNotFound, NotFound),
        _fault(vim.fault.DuplicateName, AlreadyExists),
        _fault(vim.fault.AlreadyExists, AlreadyExists),
        _fault(vim.fault.FileAlreadyExists, AlreadyExists),
        _fault(vim.fault.InsufficientResourcesFault, CapacityExceeded),
        _fault(vim.fault.InvalidPowerState, InvalidState),
        _fault(vim.fault.InvalidState, InvalidState),
        _fault(vim.fault.TaskInProgress, InvalidState),
        _fault(vim.fault.ToolsUnavailable, InvalidState),
        _fault(vim.fault.InvalidName, InvalidSpec),
        _fault(vim.fault.InvalidVmConfig, InvalidSpec),
        _fault(vim.fault.InvalidDeviceSpec, InvalidSpec),
        _fault(vmodl.fault.InvalidArgument, InvalidSpec),
        _fault(vmodl.fault.InvalidRequest, InvalidSpec),
        _fault(vmodl.MethodFault, AnyvirtError),  # RequestCanceled and every other fault
        # network-level failures: TLS, refused, reset, timed out, HTTP garbage
        Rule(ConnectionFailed, types=(ssl.SSLCertVerificationError,),
             template="{what}: the server's TLS certificate is not trusted ({message}); " + TRUST_HINT,
             detail=lambda e: getattr(e, "verify_message", "") or "verification failed"),
        # an unanswered call is a lost connection to the caller, not a slow operation
        Rule(ConnectionFailed, types=(socket.timeout, TimeoutError),
             template="{what}: no answer from the server within the call timeout"),
        Rule(ConnectionFailed, types=(ssl.SSLError, OSError, http.client.HTTPException),
             template=_TRANSPORT),
    ],
    default=Rule(AnyvirtError, template=_TRANSPORT),
    message=_message,
    fields=_fields,
)


def translate(exc: BaseException, what: str) -> AnyvirtError:
    """The anyvirt error for ``exc`` raised while doing ``what`` (its cause is ``exc``)."""
    return TABLE.translate(exc, what)


#: HTTP transfers (the datastore ``/folder`` interface) meet only the network rules
transport_error = translate
