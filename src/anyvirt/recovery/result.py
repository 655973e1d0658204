"""What a recovery reports, per VM: where it came back from, what was lost, or why it did not.

One shape for cluster recovery (``host.recover``) and standalone recovery (``anyvirt.recover``),
so a caller, the CLI's ``--json`` and the Ansible modules read every recovery the same way.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

from attrs import field, frozen

if TYPE_CHECKING:
    from anyvirt.repository.points import RestorePoint
    from anyvirt.vm import VM


class RecoveredFrom(enum.Enum):
    """How a VM came back, which says what was lost."""

    SHARED_STORAGE = "shared-storage"  # its own disks, as they were at the failure: nothing lost
    RESTORE_POINT = "restore-point"  # a repository point: everything after the point is lost
    CLUSTER = "cluster"  # the cluster manager (PVE HA) restarted it itself; anyvirt only reports
    NOT_RECOVERED = "not-recovered"  # see ``reason``


@frozen
class RecoveryResult:
    """One VM of the failed host or node."""

    vm_name: str
    old_id: str  # its id on the failed host ("" when unknown)
    outcome: RecoveredFrom
    vm: VM | None = field(default=None, eq=False)  # the recovered VM's handle on the new host
    point: RestorePoint | None = field(default=None, eq=False)  # for RESTORE_POINT
    data_age: dt.timedelta | None = None  # for RESTORE_POINT: failure time (or now) minus point time
    reason: str = ""  # for NOT_RECOVERED, and any warning for the others
    elapsed: float = 0.0  # seconds from the start of the recovery until this VM ran (or gave up)

    @property
    def recovered(self) -> bool:
        return self.outcome is not RecoveredFrom.NOT_RECOVERED


class Recovery(list[RecoveryResult]):
    """The per-VM results in the order they were handled, with the whole recovery's time."""

    def __init__(self, results: list[RecoveryResult] | None = None, *, elapsed: float = 0.0) -> None:
        super().__init__(results or [])
        self.elapsed = elapsed  # seconds for the whole recovery, checks included

    @property
    def failed(self) -> list[RecoveryResult]:
        return [r for r in self if not r.recovered]
