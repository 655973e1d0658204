"""Typed changes, and the difference between two listings (pure logic, no I/O)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Literal

from attrs import frozen

from anyvirt.model import VMSummary

if TYPE_CHECKING:
    from anyvirt.vm import VM

ChangeKind = Literal["added", "removed", "changed"]

#: what a "changed" change is about; ``raw_state`` alone is not a change (a platform's
#: word for the same state may flicker, e.g. libvirt's "blocked" and "running")
WATCHED_FIELDS = ("state", "name", "cpus", "memory_mib", "node", "template")


def changed_fields(old: VMSummary, new: VMSummary) -> frozenset[str]:
    """The watched fields whose values differ between two summaries of one VM."""
    return frozenset(f for f in WATCHED_FIELDS if getattr(old, f) != getattr(new, f))


@frozen
class VMChange:
    """One VM added, removed or changed.

    ``old`` is what the watch knew before (None when added), ``new`` what is there
    now (None when removed); ``fields`` names what changed (empty unless "changed").
    ``vm`` is a handle built from ``new`` (from ``old`` when removed), with no
    further round trip.
    """

    kind: ChangeKind
    vm: VM
    old: VMSummary | None
    new: VMSummary | None
    fields: frozenset[str] = frozenset()

    @property
    def vm_id(self) -> str:
        return self.vm.id

    def __repr__(self) -> str:
        detail = f" {','.join(sorted(self.fields))}" if self.fields else ""
        return f"<VMChange {self.kind} {self.vm.name!r}{detail}>"


def diff(
    before: Mapping[str, VMSummary], after: Mapping[str, VMSummary]
) -> Iterator[tuple[VMSummary | None, VMSummary | None]]:
    """``(old, new)`` for every VM that differs between two listings keyed by id:
    removals first (a name freed by one VM may be taken by a new one), then
    additions and changes in ``after``'s order."""
    for vm_id, gone in before.items():
        if vm_id not in after:
            yield gone, None
    for vm_id, new in after.items():
        old = before.get(vm_id)
        if old is None or changed_fields(old, new):
            yield old, new
