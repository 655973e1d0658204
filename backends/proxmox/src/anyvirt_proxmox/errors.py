"""PVE's answers, translated into anyvirt's error tree (one ordered table, the kit's).

PVE reports most failures as HTTP 500 with a message in its own words (and
400 with per-parameter ``errors``), so after the status codes the table
matches message fragments, first match wins. Messages are built from PVE's
text and the caller's "what" only, scrubbed of anything secret-looking: no
request body ever reaches them.
"""

from __future__ import annotations

import ssl

import requests
from proxmoxer.core import AuthenticationError, ResourceException

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
from anyvirt.kit.errors import ErrorTable, Rule

TRUST_HINT = (
    "add ?ca=/path/to/ca.pem to the URI to trust the server's certificate authority, "
    "or ?verify=false to skip verification (only for test servers)"
)


class TaskEnding(Exception):
    """A task's exit status, classified by the same table as HTTP answers."""


def _message(exc: BaseException) -> str:
    if isinstance(exc, ResourceException):
        text = str(exc.content or "").strip()
        if exc.errors:
            detail = "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(dict(exc.errors).items()))
            text = f"{text} ({detail})" if text else detail
        return text or str(exc.status_message or exc.status_code)
    return str(exc)


def _code(exc: BaseException) -> object:
    return int(exc.status_code) if isinstance(exc, ResourceException) else None


def _tls_detail(exc: BaseException) -> str:
    reason = exc.args[0] if exc.args else exc
    if "CERTIFICATE_VERIFY_FAILED" in str(reason) or isinstance(reason, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate is not trusted; {TRUST_HINT}"
    return f"TLS failed ({type(exc).__name__})"


def _not_supported(message: str, what: str) -> AnyvirtError:
    return NotSupported("proxmox", what, message)


_API = (ResourceException, TaskEnding)
# PVE's message fragments, for HTTP 500s and task endings alike
_MESSAGES = (
    Rule(AlreadyExists, _API, pattern=r"already exists|already used"),
    Rule(InvalidState, _API, pattern=r"checksum mismatch"),  # the config digest changed under us
    Rule(InvalidState, _API, pattern=r"is locked|can't lock file|got timeout"),
    Rule(InvalidState, _API, pattern=r"not running|already running|is running|is a template"),
    Rule(InvalidState, _API, pattern=r"protection mode|contains snapshots|still in use|used in HA"),
    Rule(InvalidState, _API, pattern=r"no quorum"),
    Rule(NotFound, _API, pattern=r"does not exist|no such|not found|unable to find"),
    Rule(NotSupported, _API, pattern=r"not supported|not implemented|feature is not available",
         build=_not_supported),
)

TABLE = ErrorTable(
    (
        Rule(AuthenticationFailed, (ResourceException,), codes=(401,),
             template="{what}: PVE refused the credentials (HTTP 401)"),
        Rule(AuthenticationFailed, (AuthenticationError,),
             template="{what}: PVE refused the user or password"),
        Rule(AuthenticationFailed, (ResourceException,), codes=(403,),
             template="{what}: {message} (HTTP 403: the user lacks a privilege)"),
        Rule(InvalidSpec, (ResourceException,), codes=(400,)),
        Rule(NotSupported, (ResourceException,), codes=(501,), build=_not_supported),
        Rule(ConnectionFailed, (ResourceException,), codes=(595, 596, 597, 598, 599),
             template="{what}: {message} (HTTP {code}: PVE could not reach the node)"),
        *_MESSAGES,
        Rule(ConnectionFailed, (requests.exceptions.SSLError,), template="{what}: {message}",
             detail=_tls_detail),
        Rule(ConnectionFailed, (requests.exceptions.Timeout,),
             template="{what}: no answer from the server within the call timeout"),
        Rule(ConnectionFailed, (requests.exceptions.ConnectionError,),
             template="{what}: the server cannot be reached ({type})"),
        Rule(ConnectionFailed, (requests.exceptions.RequestException, OSError), template="{what}: {type}"),
    ),
    default=Rule(AnyvirtError),
    code=_code,
    message=_message,
)


def translate(exc: BaseException, what: str) -> AnyvirtError:
    """The anyvirt error for anything proxmoxer or requests raised (chained to ``exc``)."""
    return TABLE.translate(exc, what)


def ending_kind(exitstatus: str) -> str:
    """The anyvirt error class a failed task's exit status stands for (``TaskFailed.fault``)."""
    return TABLE.rule_for(TaskEnding(exitstatus)).error.__name__
