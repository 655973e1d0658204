"""The changed-block interface a backend implements to make incremental backups read less.

The real trackers (libvirt's qcow2 bitmaps, vSphere CBT) are tested with their backends;
these tests use a **stand-in**: a memory host that records the extents written since
each mark, the way a platform's dirty bitmap does. They prove the repository's side:
only changed chunks are read, everything else comes from the earlier point, a lost
record means a full read, and marks no point builds on are dropped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from repo_helpers import MIB, image, memory_disk, memory_host, memory_vm, pattern, write_memory_disk

import anyvirt
from anyvirt import BackupRepository
from anyvirt.memory import MemoryDriver, reset
from anyvirt.model import Capability
from anyvirt.registry import register
from anyvirt.repository import ChangeTracker
from anyvirt.repository.sources import dirty_chunks
from anyvirt.tasks import Job


class TrackingStandIn(MemoryDriver):
    """A memory host with a stand-in dirty bitmap: ``written`` extents since each mark."""

    backend = "trackingstandin"
    possible_capabilities = frozenset(Capability)
    log: dict[str, list[tuple[int, int]]] = {}  # per test: reset by the fixture
    lost = False

    def change_mark(self, vm_id: str, disk_id: str, job: Job) -> str | None:
        mark = uuid.uuid4().hex
        self.log[mark] = []
        return mark

    def changed_extents(self, vm_id: str, disk_id: str, since: str,
                        job: Job) -> list[tuple[int, int]] | None:
        return None if self.lost or since not in self.log else list(self.log[since])

    def drop_change_mark(self, vm_id: str, disk_id: str, mark: str, job: Job) -> None:
        self.log.pop(mark, None)


register("trackingstandin", TrackingStandIn)


def guest_write(vm: anyvirt.VM, offset: int, data: bytes) -> None:
    write_memory_disk(vm, offset, data)
    for extents in TrackingStandIn.log.values():
        extents.append((offset, len(data)))


@pytest.fixture
def tracked(tmp_path: Path) -> Iterator[anyvirt.VM]:
    name = f"cbt-{uuid.uuid4().hex[:8]}"
    TrackingStandIn.log, TrackingStandIn.lost = {}, False
    host = anyvirt.connect(f"trackingstandin://{name}")
    assert isinstance(host.driver, ChangeTracker)
    yield memory_vm(host, "db1", image(tmp_path / "d.raw", 32 * MIB, [(0, pattern(1, 24 * MIB))]))
    reset(name)


def test_only_changed_chunks_are_read(tracked: anyvirt.VM, tmp_path: Path) -> None:
    repo = BackupRepository(tmp_path / "repo")
    first = repo.backup(tracked)
    assert first.read_bytes == 24 * MIB
    guest_write(tracked, 9 * MIB, pattern(2, 64 * 1024))
    second = repo.backup(tracked)
    assert second.read_bytes == repo.chunk_size  # the one chunk the write touched
    assert second.stored_bytes < repo.chunk_size
    assert list(TrackingStandIn.log) == [second.disks[0]["change_mark"]]  # the parent's: gone
    copy = repo.restore(second, to=memory_host("t"), name="c")
    assert memory_disk(copy) == memory_disk(tracked)
    assert repo.verify().ok


def test_a_lost_change_record_means_a_full_read(tracked: anyvirt.VM, tmp_path: Path) -> None:
    repo = BackupRepository(tmp_path / "repo")
    repo.backup(tracked)
    guest_write(tracked, 20 * MIB, pattern(3, MIB))
    TrackingStandIn.lost = True  # the platform reset its bitmap (a crash, a disk resize)
    again = repo.backup(tracked)
    assert again.read_bytes == 24 * MIB
    copy = repo.restore(again, to=memory_host("t"), name="c")
    assert memory_disk(copy) == memory_disk(tracked)


def test_dirty_chunks_cover_every_touched_chunk_and_no_other() -> None:
    chunk = 4 * MIB
    assert dirty_chunks([(0, 1)], chunk, 32 * MIB) == {0}
    assert dirty_chunks([(4 * MIB - 1, 2)], chunk, 32 * MIB) == {0, 1}
    assert dirty_chunks([(8 * MIB, 8 * MIB)], chunk, 32 * MIB) == {2, 3}
    assert dirty_chunks([(30 * MIB, 100 * MIB), (5 * MIB, 0)], chunk, 32 * MIB) == {7}


def test_marks_of_a_failed_backup_are_dropped(tracked: anyvirt.VM, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    repo = BackupRepository(tmp_path / "repo")
    first = repo.backup(tracked)

    def refuse(*_args: object) -> None:
        raise OSError("the storage went away")

    monkeypatch.setattr(repo.store, "put", refuse)  # a fault in the repository's storage
    with pytest.raises(OSError, match="went away"):
        repo.backup(tracked)
    assert list(TrackingStandIn.log) == [first.disks[0]["change_mark"]]


def test_without_the_capability_the_tracker_is_not_asked(tmp_path: Path) -> None:
    name = f"cbt-{uuid.uuid4().hex[:8]}"
    TrackingStandIn.log, TrackingStandIn.lost = {}, False
    host = anyvirt.connect(f"trackingstandin://{name}?without=disk.changed_blocks")
    vm = memory_vm(host, "db1", image(tmp_path / "d.raw", 8 * MIB, [(0, pattern(1, MIB))]))
    point = BackupRepository(tmp_path / "repo").backup(vm)
    assert point.disks[0]["change_mark"] is None and TrackingStandIn.log == {}
    reset(name)
