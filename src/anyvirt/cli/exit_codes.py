"""Exit codes: a script can tell "no such VM" from "bad input" from "the platform failed".

The order of ``_BY_ERROR`` matters: it is searched first match wins, and some
errors belong to two families (an unknown URI scheme is both ``NotFound`` and
``InvalidSpec``; it is the caller's input that is wrong, so it is a 2).
"""

from __future__ import annotations

import enum

import click

from anyvirt import errors


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1  # the backend failed (TaskFailed, any other anyvirt error)
    INVALID_INPUT = 2  # usage error, malformed URI, InvalidSpec
    NOT_FOUND = 3  # VM, snapshot, node or profile does not exist
    CONFLICT = 4  # InvalidState, AlreadyExists
    NOT_SUPPORTED = 5  # the backend cannot do this
    CONNECTION = 6  # ConnectionFailed, AuthenticationFailed
    TIMEOUT = 7  # a wait ran past its timeout


_BY_ERROR: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (errors.InvalidSpec, ExitCode.INVALID_INPUT),
    (errors.NotFound, ExitCode.NOT_FOUND),
    (errors.InvalidState, ExitCode.CONFLICT),
    (errors.AlreadyExists, ExitCode.CONFLICT),
    (errors.NotSupported, ExitCode.NOT_SUPPORTED),
    (errors.ConnectionFailed, ExitCode.CONNECTION),
    (errors.Timeout, ExitCode.TIMEOUT),
)


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code for an error raised by anyvirt."""
    for kind, code in _BY_ERROR:
        if isinstance(error, kind):
            return code
    return ExitCode.FAILURE


# Shown in ``anyvirt --help`` and in the CLI reference; kept next to the enum so
# the two never disagree.
EXIT_CODE_HELP: tuple[tuple[ExitCode, str], ...] = (
    (ExitCode.OK, "success"),
    (ExitCode.FAILURE, "the backend failed (TaskFailed or another error)"),
    (ExitCode.INVALID_INPUT, "bad usage or input (malformed URI, InvalidSpec, CapacityExceeded)"),
    (ExitCode.NOT_FOUND, "not found (VM, snapshot, node, profile)"),
    (ExitCode.CONFLICT, "conflict: InvalidState (e.g. pausing a stopped VM) or AlreadyExists"),
    (ExitCode.NOT_SUPPORTED, "the backend does not support the operation (NotSupported)"),
    (ExitCode.CONNECTION, "could not connect or log in (ConnectionFailed, AuthenticationFailed)"),
    (ExitCode.TIMEOUT, "a wait ran past its timeout (Timeout)"),
)


def exit_code_epilog() -> str:
    r"""The exit-code table as click help text (``\b`` keeps click from re-wrapping it)."""
    lines = ["\b", "Exit codes:"]
    lines += [f"  {int(code)}  {text}" for code, text in EXIT_CODE_HELP]
    return "\n".join(lines)


class CliError(click.ClickException):
    """A failure the command itself finds (not one of anyvirt's errors), with its family."""

    def __init__(self, message: str, code: ExitCode, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = int(code)  # type: ignore[misc]
