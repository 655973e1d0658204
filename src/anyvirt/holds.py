"""One change at a time per VM: the holds the operation gate takes.

A hold is a key (the host's safe URI and a VM id, or a VM name being
created) owned by one operation until its work really ends, whichever thread
that work runs in. A second change asked for meanwhile is refused (the gate says
``InvalidState``, "busy", or ``AlreadyExists`` for a name) instead of racing the first, as vSphere refuses a
second task on a VM and Proxmox a second lock. Holds are per process: they
order this process's calls, not those of other tools.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

_guard = threading.Lock()
_held: dict[tuple[str, str], str] = {}


class Busy(Exception):
    """Raised by ``take``: ``kind`` is "id" or "name", ``value`` the VM id or name,
    ``what`` the operation holding it. The gate turns it into the user's error."""

    def __init__(self, kind: str, value: str, what: str) -> None:
        super().__init__(f"{kind} {value} is held by {what}")
        self.kind, self.value, self.what = kind, value, what


class Hold:
    """Keys held for one operation; ``release()`` gives them back (idempotent)."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self._keys = keys

    def release(self) -> None:
        with _guard:
            for key in self._keys:
                _held.pop(key, None)
        self._keys = []


def take(host_key: str, vm_ids: Iterable[str], names: Iterable[str], what: str) -> Hold:
    """Hold VMs by id and new names, all or nothing.

    Anything held already raises ``Busy`` and nothing is taken.
    """
    keys = [(host_key, f"id:{v}") for v in vm_ids] + [(host_key, f"name:{n}") for n in names]
    with _guard:
        for key in keys:
            other = _held.get(key)
            if other is None:
                continue
            kind, _, value = key[1].partition(":")
            raise Busy(kind, value, other)
        for key in keys:
            _held[key] = what
    return Hold(keys)


def busy(host_key: str, vm_id: str) -> str | None:
    """What holds this VM now, if anything."""
    with _guard:
        return _held.get((host_key, f"id:{vm_id}"))
