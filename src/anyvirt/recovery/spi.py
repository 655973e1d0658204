"""What a standalone host's driver offers for recovery (a mixin of the driver SPI).

A driver that keeps definition records (:mod:`anyvirt.recovery.records`) beside its
VMs' disks inherits :class:`RecoverySupport`; ``anyvirt.recover`` refuses a target
whose driver does not, before anything is changed. Primitives on plain values, no
policy: the order, the checks and the report are the workflow's
(:mod:`anyvirt.recovery.standalone`).
"""

from __future__ import annotations

import abc

from anyvirt.model import VMSummary
from anyvirt.recovery.records import DefinitionRecord, RecoveryMark
from anyvirt.tasks import Job


class RecoverySupport(abc.ABC):
    """Recovery primitives of a host that can take over a failed host's VMs."""

    @abc.abstractmethod
    def definition_records(self) -> list[DefinitionRecord]:
        """Every definition record this host's storage holds (of any host); unreadable
        ones are skipped (and logged)."""

    @abc.abstractmethod
    def recovery_marks(self) -> list[RecoveryMark]:
        """Every recovery mark this host's storage holds."""

    @abc.abstractmethod
    def unreadable_disks(self, record: DefinitionRecord) -> list[str]:
        """The record's disks this host cannot use as they are (not in its storage)."""

    @abc.abstractmethod
    def locked_disks(self, paths: list[str]) -> dict[str, str] | None:
        """The disks another process holds open for writing (path -> what says so); None
        when this host's image locks cannot be probed from here."""

    @abc.abstractmethod
    def define_recovered(self, record: DefinitionRecord, job: Job) -> VMSummary:
        """Define the record's VM here, on its own disks, as it was (same id)."""

    @abc.abstractmethod
    def undo_recovered(self, record: DefinitionRecord) -> None:
        """Undefine what :meth:`define_recovered` defined (never its disks), put the record
        back as it was and remove the recovery mark, so that a later recovery finds the VM
        again."""

    @abc.abstractmethod
    def write_recovery_mark(self, mark: RecoveryMark, record: DefinitionRecord | None) -> bool:
        """Leave ``mark`` beside the record's disks (or in this host's storage when there is
        no record); False when there is nowhere the failed host could read it."""
