"""Snapshots: ``vm.snapshots`` and the ``Snapshot`` handle.

Drivers list snapshots flat, each with its ``parent_id``; the tree
(``parent``, ``children``) is derived here, once, for every backend.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Literal, overload

from anyvirt import validation
from anyvirt.errors import NotFound
from anyvirt.lookup import by_id_or_name
from anyvirt.model import Capability, SnapshotInfo
from anyvirt.tasks import DEFAULT_TIMEOUT, Task

if TYPE_CHECKING:
    from anyvirt.vm import VM


class Snapshot:
    def __init__(self, vm: VM, info: SnapshotInfo) -> None:
        self.vm = vm
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def description(self) -> str:
        return self.info.description

    @property
    def created(self) -> datetime | None:
        return self.info.created

    @property
    def memory(self) -> bool:
        """True if the snapshot holds the running guest's memory (revert resumes it)."""
        return self.info.memory

    @property
    def parent(self) -> Snapshot | None:
        if self.info.parent_id is None:
            return None
        return self.vm.snapshots.get_by_id(self.info.parent_id)

    @property
    def children(self) -> list[Snapshot]:
        return [s for s in self.vm.snapshots.list() if s.info.parent_id == self.id]

    @property
    def is_current(self) -> bool:
        return self.info.current

    @overload
    def revert(self, *, wait: Literal[True] = ..., timeout: float | None = ...) -> Snapshot: ...
    @overload
    def revert(self, *, wait: Literal[False], timeout: float | None = ...) -> Task[Snapshot]: ...
    def revert(self, *, wait: bool = True,
               timeout: float | None = DEFAULT_TIMEOUT) -> Snapshot | Task[Snapshot]:
        """Return the VM to this snapshot: disks, config, and (memory snapshots) the running
        guest. A disk-only snapshot leaves the VM stopped. ``CapacityExceeded`` if the CPUs
        or memory it brings back would pass the overcommit limit."""
        vm = self.vm

        def reverted(_: None) -> Snapshot:
            vm.refresh()
            return self

        return vm.host.gate.snapshot_revert(vm.id, vm.name, self.id, self.name, reverted,
                                            wait=wait, timeout=timeout)

    @overload
    def delete(self, children: bool = ..., *, wait: Literal[True] = ...,
               timeout: float | None = ...) -> None: ...
    @overload
    def delete(self, children: bool = ..., *, wait: Literal[False],
               timeout: float | None = ...) -> Task[None]: ...
    def delete(self, children: bool = False, *, wait: bool = True,
               timeout: float | None = DEFAULT_TIMEOUT) -> Task[None] | None:
        """Delete this snapshot (its children are re-parented), or with ``children=True`` the
        whole subtree. The VM's current state is untouched."""
        return self.vm.host.gate.snapshot_delete(self.vm.id, self.vm.name, self.id, self.name,
                                                 bool(children), wait=wait, timeout=timeout)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snapshot) and other.vm == self.vm and other.id == self.id

    def __hash__(self) -> int:
        return hash((self.vm.id, self.id))

    def __repr__(self) -> str:
        return f"<Snapshot {self.name!r} of {self.vm.name!r}>"


class SnapshotCollection:
    """``vm.snapshots``: create, list, get, current."""

    def __init__(self, vm: VM) -> None:
        self._vm = vm

    def _require(self) -> None:
        self._vm.host.gate.require(Capability.SNAPSHOTS)

    def list(self) -> list[Snapshot]:
        """Every snapshot, parents before children."""
        self._require()
        infos = self._vm.host.driver.list_snapshots(self._vm.id)
        return [Snapshot(self._vm, i) for i in _tree_order(infos)]

    def get(self, ref: str) -> Snapshot:
        """A snapshot by id, else by name; ``NotFound`` if absent, ``AmbiguousName`` if
        more than one snapshot has that name."""
        validation.LOOKUP.check(ref, "snapshot name or id")
        return by_id_or_name(self.list(), ref, id_of=lambda s: s.id, name_of=lambda s: s.name,
                             what="snapshot", where=f"VM {self._vm.name!r}")

    def get_by_id(self, snapshot_id: str) -> Snapshot:
        for s in self.list():
            if s.id == snapshot_id:
                return s
        raise NotFound(f"VM {self._vm.name!r} has no snapshot with id {snapshot_id!r}")

    @property
    def current(self) -> Snapshot | None:
        """The snapshot the VM's state descends from (the next snapshot's parent)."""
        for s in self.list():
            if s.info.current:
                return s
        return None

    @property
    def roots(self) -> builtins.list[Snapshot]:
        return [s for s in self.list() if s.info.parent_id is None]

    @overload
    def create(self, name: str, description: str = ..., memory: bool = ..., *,
               wait: Literal[True] = ..., timeout: float | None = ...) -> Snapshot: ...
    @overload
    def create(self, name: str, description: str = ..., memory: bool = ..., *,
               wait: Literal[False], timeout: float | None = ...) -> Task[Snapshot]: ...
    def create(self, name: str, description: str = "", memory: bool = False, *,
               wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> Snapshot | Task[Snapshot]:
        """Snapshot the VM. ``memory=True`` also saves a running guest's memory, so revert
        resumes it where it was (ignored for a stopped VM, which has no memory to save).
        ``AlreadyExists`` if the VM has a snapshot of that name."""
        vm = self._vm
        return vm.host.gate.snapshot_create(vm.id, vm.name, name, description, memory,
                                            lambda info: Snapshot(vm, info), wait=wait,
                                            timeout=timeout)

    def __iter__(self) -> Iterator[Snapshot]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.list())


def _tree_order(infos: list[SnapshotInfo]) -> list[SnapshotInfo]:
    """Parents before children, siblings by creation time then name."""
    by_parent: dict[str | None, list[SnapshotInfo]] = {}
    ids = {i.id for i in infos}
    for info in infos:
        parent = info.parent_id if info.parent_id in ids else None
        by_parent.setdefault(parent, []).append(info)
    out: list[SnapshotInfo] = []
    stack = sorted(by_parent.get(None, []), key=_order_key, reverse=True)
    while stack:
        info = stack.pop()
        out.append(info)
        stack.extend(sorted(by_parent.get(info.id, []), key=_order_key, reverse=True))
    return out


def _order_key(info: SnapshotInfo) -> tuple[float, str]:
    return (info.created.timestamp() if info.created else 0.0, info.name)
