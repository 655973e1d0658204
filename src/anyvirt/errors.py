"""One error tree for every backend.

Backends translate their SDK's exceptions into these and chain the original
(``raise NotFound(...) from exc``) so callers can still reach it through
``__cause__``. Messages never contain credentials: build them from names and
ids, never from URIs or request bodies.
"""

from __future__ import annotations

from anyvirt.capability import Capability


class AnyvirtError(Exception):
    """Base of every error anyvirt raises."""


class ConnectionFailed(AnyvirtError):
    """The platform could not be reached, or the connection dropped."""


class OutcomeUnknown(ConnectionFailed):
    """The connection failed after a change had been sent: it may or may not have been made.

    Never retry blindly: look first. ``vm_id`` (or ``vm_name`` for a VM being made)
    and ``task_id`` name what to check; either may be empty where it is not known.
    """

    def __init__(self, message: str, *, vm_id: str = "", vm_name: str = "", task_id: str = "") -> None:
        self.vm_id = vm_id
        self.vm_name = vm_name
        self.task_id = task_id
        super().__init__(message)

    def concerning(self, *, vm_id: str = "", vm_name: str = "") -> OutcomeUnknown:
        """Fill in the VM to check where the raiser did not know it (the gate does)."""
        if vm_id and not self.vm_id:
            self.vm_id = vm_id
        if vm_name and not self.vm_name:
            self.vm_name = vm_name
        if self.vm_id or self.vm_name:
            what = f"VM {self.vm_name!r}" if self.vm_name else "the VM"
            if self.vm_id:
                what += f" (id {self.vm_id})"
            hint = f"check {what} before retrying"
            if hint not in str(self):
                self.args = (f"{self.args[0] if self.args else ''}; {hint}",)
        return self


class AuthenticationFailed(ConnectionFailed):
    """The platform was reached but refused the credentials."""


class NotFound(AnyvirtError):
    """A VM, snapshot, node, backend or other object does not exist."""


class AmbiguousName(NotFound):
    """A lookup by name matched more than one object (vSphere folders, Proxmox and
    VirtualBox allow two VMs of one name): no single one is *the* one, so nothing is
    picked. ``ids`` are the matches; look one up by its id. A ``NotFound``, so code
    that handles "no such VM" refuses it too, never acting on a guess."""

    def __init__(self, message: str, ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.ids = ids


class AlreadyExists(AnyvirtError):
    """An object with that name or id exists already."""


class InvalidState(AnyvirtError):
    """The object exists but its state forbids the operation (e.g. pausing a stopped VM)."""


class InvalidSpec(AnyvirtError, ValueError):
    """The caller's input is wrong; raised before anything changes on a host.

    When a field's rule (``anyvirt.validation``) refused a value, ``field`` names the
    field ("VM name", "description") and ``rule`` the rule it broke ("control
    characters", "length"); both are empty for other mistakes.
    """

    field: str = ""
    rule: str = ""


class CapacityExceeded(InvalidSpec):
    """The request would push allocation past the host's overcommit limit."""


class StorageFull(CapacityExceeded):
    """There is no room for the bytes: the target's storage, or a local disk or temp
    dir, is too small (checked first where sizes are known, else hit on the way)."""


class NotSupported(AnyvirtError):
    """The backend (or this connection to it) does not offer the capability.

    Raised before anything is sent to the platform.
    """

    def __init__(self, backend: str, capability: Capability | str, detail: str = "") -> None:
        self.backend = backend
        #: the missing ``Capability`` (always one: a capability's value is converted)
        self.capability: Capability = (
            capability if isinstance(capability, Capability) else Capability(capability)
        )
        msg = f"{backend} does not support {self.capability.value}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class TaskFailed(AnyvirtError):
    """A platform task ended in failure; carries the task id and its log."""

    def __init__(
        self, message: str, *, task_id: str = "", log: str = "", fault: str = ""
    ) -> None:
        self.task_id = task_id
        self.log = log
        self.fault = fault
        super().__init__(message)


class Timeout(AnyvirtError, TimeoutError):
    """A wait ran past its timeout. The operation may still be running on the platform."""


class ConsoleClosed(AnyvirtError, EOFError):
    """A VM's console ended: the VM stopped, another client took the console over, or the
    connection to it was lost."""


class EvacuationIncomplete(ExceptionGroup, AnyvirtError):
    """``host.evacuate`` moved what it could; these VMs stayed. An ``ExceptionGroup`` of
    each VM's error (``except* NotSupported`` works) that ``except AnyvirtError`` also
    catches. ``results`` holds the moves that succeeded."""

    results: list[object]


class Cancelled(AnyvirtError):
    """The task was cancelled by the caller."""


__all__ = [
    "AlreadyExists",
    "AmbiguousName",
    "AnyvirtError",
    "AuthenticationFailed",
    "Cancelled",
    "CapacityExceeded",
    "ConnectionFailed",
    "EvacuationIncomplete",
    "InvalidSpec",
    "InvalidState",
    "NotFound",
    "NotSupported",
    "OutcomeUnknown",
    "StorageFull",
    "TaskFailed",
    "Timeout",
]
