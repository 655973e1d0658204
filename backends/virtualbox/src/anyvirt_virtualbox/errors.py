"""``VBoxManage: error:`` on stderr, and what each error means in anyvirt's terms.

VirtualBox prints an error as up to three lines (``VBoxManage.exe: error:`` on
Windows): the message, ``Details: code VBOX_E_... (0x80bb....), component ...,
interface ..., callee ...`` and ``Context: "..." at line N of file ...``. The
code decides the anyvirt error; a few messages refine it (a duplicate name
is a ``VBOX_E_FILE_ERROR`` about a settings file that "already exists").
"""

from __future__ import annotations

import re

import attrs

from anyvirt.errors import (
    AlreadyExists,
    AnyvirtError,
    AuthenticationFailed,
    InvalidSpec,
    InvalidState,
    NotFound,
    TaskFailed,
)
from anyvirt.kit.errors import ErrorTable, Rule

_PREFIX = re.compile(r"^VBoxManage(?:\.exe)?: error: ?")
_DETAILS = re.compile(r"^Details: code (?P<name>[A-Z_]+) \((?P<hex>0x[0-9a-fA-F]+)\)(?P<rest>.*)$")
_CONTEXT = re.compile(r'^Context: "(?P<call>.*)" at line (?P<line>\d+) of file (?P<file>\S+)$')

# The VBOX_E_* and COM codes VBoxManage reports, by what they mean to a caller.
CODE_ERRORS: dict[str, type[AnyvirtError]] = {
    "VBOX_E_OBJECT_NOT_FOUND": NotFound,
    "VBOX_E_INVALID_VM_STATE": InvalidState,
    "VBOX_E_INVALID_OBJECT_STATE": InvalidState,
    "VBOX_E_INVALID_SESSION_STATE": InvalidState,
    "VBOX_E_OBJECT_IN_USE": InvalidState,
    "VBOX_E_PASSWORD_INCORRECT": AuthenticationFailed,
    "VBOX_E_MAXIMUM_REACHED": InvalidSpec,
    "E_INVALIDARG": InvalidSpec,
    "NS_ERROR_INVALID_ARG": InvalidSpec,
}

# Messages that say more than their code; checked first, in this order.
MESSAGE_ERRORS: tuple[tuple[str, type[AnyvirtError]], ...] = (
    (r"already exists|is already registered|already has a snapshot", AlreadyExists),
    (r"Could not find (?:a registered machine|a snapshot|file|a medium)", NotFound),
    (
        r"is not currently running|is not running|is already locked|already has a lock request pending|"
        r"is not in a state|cannot be deleted, because|in the (?:saved|running) state|"
        r"Invalid machine state|has more than one child hard disk",
        InvalidState,
    ),
)

# A session lock another process holds: gone in a moment, so worth a brief retry.
_LOCKED = re.compile(r"is already locked|session is busy|already has a lock request pending", re.I)


class VBoxManageFailed(Exception):
    """What VBoxManage printed, as an exception the kit's error table translates."""

    def __init__(self, error: VBoxError) -> None:
        super().__init__(error.message)
        self.error = error


def _fault_log(exc: BaseException) -> str:
    error = exc.error if isinstance(exc, VBoxManageFailed) else None
    return "" if error is None else "\n".join(x for x in (error.message, error.details, error.context) if x)


_TEMPLATE = "{what}: {message}{suffix}"


def _code(exc: BaseException) -> str | None:
    return exc.error.code if isinstance(exc, VBoxManageFailed) else None


TABLE = ErrorTable(
    [Rule(error=cls, pattern=pattern, template=_TEMPLATE) for pattern, cls in MESSAGE_ERRORS]
    + [Rule(error=cls, codes=(code,), template=_TEMPLATE) for code, cls in CODE_ERRORS.items()],
    default=Rule(error=TaskFailed, template=_TEMPLATE),
    code=_code,
    fields=lambda exc: {"suffix": f" ({_code(exc)})" if _code(exc) else ""},
)


@attrs.frozen
class VBoxError:
    """One error VBoxManage printed."""

    message: str
    code: str = ""  # VBOX_E_OBJECT_NOT_FOUND, NS_ERROR_FAILURE, ...
    hex_code: str = ""
    details: str = ""
    context: str = ""

    @property
    def locked(self) -> bool:
        """A session-lock clash: another VBoxManage or VBoxSVC holds the machine just now."""
        return bool(_LOCKED.search(self.message))


def parse_error(stderr: str) -> VBoxError | None:
    """The first error in ``stderr`` (None when there is no ``error:`` line)."""
    messages: list[str] = []
    code = hex_code = details = context = ""
    for raw in stderr.splitlines():
        m = _PREFIX.match(raw)
        if not m:
            continue
        line = raw[m.end() :]
        d = _DETAILS.match(line)
        if d:
            if not code:
                code, hex_code, details = d["name"], d["hex"].lower(), line
            continue
        c = _CONTEXT.match(line)
        if c:
            context = context or line
            continue
        if not code:  # the message lines of the first error
            messages.append(line.strip())
    if not messages and not code:
        return None
    return VBoxError(
        message=" ".join(m for m in messages if m),
        code=code,
        hex_code=hex_code,
        details=details,
        context=context,
    )


def error_class(error: VBoxError) -> type[AnyvirtError]:
    """The anyvirt error class for a VirtualBox error (the message first where it is more precise)."""
    return TABLE.rule_for(VBoxManageFailed(error)).error


def to_anyvirt(error: VBoxError, what: str) -> AnyvirtError:
    """An anyvirt exception for ``error``, raised while doing ``what``; a TaskFailed carries
    VirtualBox's code as its fault and all its lines as its log."""
    failed = VBoxManageFailed(error)
    exc = TABLE.translate(failed, what)
    if isinstance(exc, TaskFailed):
        exc.fault, exc.log = error.code, _fault_log(failed)
    return exc
