"""PVE's answers, translated into anyvirt's error tree.

PVE reports most failures as HTTP 500 with a message in its own words (and
400 with per-parameter ``errors``), so the table below matches message
fragments, first match wins. Messages are built from PVE's text and the
request's path only: no request body, so no secret, ever reaches them.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

import requests
from proxmoxer.core import ResourceException

from anyvirt.errors import (
    AlreadyExists,
    AnyvirtError,
    AuthenticationFailed,
    ConnectionFailed,
    InvalidSpec,
    InvalidState,
    NotFound,
    NotSupported,
)

TRUST_HINT = (
    "add ?ca=/path/to/ca.pem to the URI to trust the server's certificate authority, "
    "or ?verify=false to skip verification (only for test servers)"
)

# (pattern in PVE's message, error class), checked in order.
MESSAGE_TABLE: tuple[tuple[re.Pattern[str], type[AnyvirtError]], ...] = tuple(
    (re.compile(pattern, re.I), error)
    for pattern, error in (
        (r"already exists|already used|config file already exists", AlreadyExists),
        (r"checksum mismatch", InvalidState),  # the config digest changed under us
        (r"is locked|can't lock file|got timeout", InvalidState),
        (r"not running|already running|is running|is a template|is not a template", InvalidState),
        (r"protection mode enabled|contains snapshots|still in use|used in HA resources", InvalidState),
        (r"no quorum", InvalidState),
        (r"does not exist|no such|not found|unable to find", NotFound),
        (r"not supported|not implemented|feature is not available", NotSupported),
    )
)


def _pve_message(exc: ResourceException) -> str:
    text = str(exc.content or "").strip()
    if exc.errors:
        detail = "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(dict(exc.errors).items()))
        text = f"{text} ({detail})" if text else detail
    return text or str(exc.status_message or exc.status_code)


def translate_api_error(exc: ResourceException, what: str) -> AnyvirtError:
    """The anyvirt error for an HTTP error answer of PVE (the caller chains ``exc``)."""
    status = int(exc.status_code)
    message = f"{what}: {_pve_message(exc)}"
    if status == 401:
        return AuthenticationFailed(f"{what}: PVE refused the credentials (HTTP 401)")
    if status == 403:
        return AuthenticationFailed(f"{message} (HTTP 403: the user lacks a privilege)")
    if status == 400:
        return InvalidSpec(message)
    if status == 501:
        return NotSupported("proxmox", what, _pve_message(exc))
    if status >= 595:  # PVE's proxy could not reach the node the request is for
        return ConnectionFailed(f"{message} (HTTP {status})")
    return error_for_message(message)


def error_for_message(message: str) -> AnyvirtError:
    """Match a PVE message (an HTTP error's or a failed task's) against the table."""
    for pattern, error in MESSAGE_TABLE:
        if pattern.search(message):
            if error is NotSupported:
                return NotSupported("proxmox", "this operation", message)
            return error(message)
    return AnyvirtError(message)


def translate_transport_error(exc: BaseException, what: str) -> AnyvirtError:
    """Network-level failures: TLS, refused, reset, timed out."""
    if isinstance(exc, requests.exceptions.SSLError):
        reason = exc.args[0] if exc.args else exc
        if "CERTIFICATE_VERIFY_FAILED" in str(reason) or _is_verify_error(reason):
            return ConnectionFailed(f"{what}: the server's TLS certificate is not trusted; {TRUST_HINT}")
        return ConnectionFailed(f"{what}: TLS failed ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.Timeout):
        return ConnectionFailed(f"{what}: no answer from the server within the call timeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return ConnectionFailed(f"{what}: the server cannot be reached ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.RequestException | OSError):
        return ConnectionFailed(f"{what}: {type(exc).__name__}")
    return AnyvirtError(f"{what}: {type(exc).__name__}")


def _is_verify_error(reason: Any) -> bool:
    return isinstance(reason, ssl.SSLCertVerificationError)


def is_transport_error(exc: BaseException) -> bool:
    return isinstance(exc, requests.exceptions.RequestException | OSError)
