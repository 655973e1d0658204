"""Watching VMs at the cost of their changes, not of the fleet's size.

``host.vms.watch()`` gives a :class:`Watch`: an iterator of :class:`VMChange`
(added, removed, changed) fed by the driver's change source (libvirt domain
events, vSphere's ``WaitForUpdatesEx``, a poll where the platform pushes
nothing), and a context manager that closes it. ``vm.wait_for(state)`` is built
on it.
"""

from anyvirt.watch.changes import WATCHED_FIELDS, ChangeKind, VMChange, changed_fields, diff
from anyvirt.watch.stream import DEFAULT_BUFFER, Watch, WatchStats
from anyvirt.watch.waits import wait_for_state

__all__ = [
    "DEFAULT_BUFFER",
    "WATCHED_FIELDS",
    "ChangeKind",
    "VMChange",
    "Watch",
    "WatchStats",
    "changed_fields",
    "diff",
    "wait_for_state",
]
