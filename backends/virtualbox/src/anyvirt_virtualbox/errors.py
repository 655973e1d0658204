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
    "VBOX_E_VM_ERROR": TaskFailed,
    "VBOX_E_FILE_ERROR": TaskFailed,
    "VBOX_E_IPRT_ERROR": TaskFailed,
    "VBOX_E_PDM_ERROR": TaskFailed,
    "VBOX_E_HOST_ERROR": TaskFailed,
    "VBOX_E_XML_ERROR": TaskFailed,
    "VBOX_E_NOT_SUPPORTED": TaskFailed,
    "NS_ERROR_FAILURE": TaskFailed,
    "E_FAIL": TaskFailed,
    "E_ACCESSDENIED": TaskFailed,
}

# Messages that say more than their code.
_MESSAGE_ERRORS: tuple[tuple[re.Pattern[str], type[AnyvirtError]], ...] = (
    (re.compile(r"already exists|is already registered|already has a snapshot", re.I), AlreadyExists),
    (re.compile(r"Could not find (?:a registered machine|a snapshot|file|a medium)", re.I), NotFound),
    (
        re.compile(
            r"is not currently running|is not running|is already locked|"
            r"is not in a state|cannot be deleted, because|in the (?:saved|running) state|"
            r"Invalid machine state|has more than one child hard disk|already has a lock request pending",
            re.I,
        ),
        InvalidState,
    ),
)

# A session lock another process holds: gone in a moment, so worth a brief retry.
_LOCKED = re.compile(r"is already locked|session is busy|already has a lock request pending", re.I)


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
    """The anyvirt error for a VirtualBox error: the message first where it is more precise."""
    for pattern, cls in _MESSAGE_ERRORS:
        if pattern.search(error.message):
            return cls
    return CODE_ERRORS.get(error.code, TaskFailed)


def to_anyvirt(error: VBoxError, what: str) -> AnyvirtError:
    """An anyvirt exception for ``error``, raised while doing ``what``."""
    cls = error_class(error)
    text = f"{what}: {error.message}" + (f" ({error.code})" if error.code else "")
    if cls is TaskFailed:
        return TaskFailed(
            text,
            fault=error.code,
            log="\n".join(x for x in (error.message, error.details, error.context) if x),
        )
    return cls(text)
