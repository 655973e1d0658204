"""Backups cut at a bad moment: kill -9, a full disk, a frozen backup beside a prune.

Each time the repository must verify, list no partial point, and take the next
backup; prune must never remove what a backup in flight needs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from move_faults_support import small_tmpfs
from repo_helpers import MIB, image, memory_disk, memory_host, memory_vm, pattern

from anyvirt import BackupRepository, StorageFull
from anyvirt.repository.store import TEMP

SCRIPT = Path(__file__).with_name("backup_process.py")
Starter = Callable[[Path, Path, str], "subprocess.Popen[str]"]
SMALL_CHUNKS = 64 * 1024  # many objects: the backup is cut with plenty written, plenty to go


def files(root: Path, folder: str) -> list[Path]:
    return [p for p in (root / folder).rglob("*") if p.is_file()]


@pytest.fixture
def big_image(tmp_path: Path) -> Path:
    # random bytes: every chunk is new and stored, none compresses away
    return image(tmp_path / "big.raw", 96 * MIB, [(0, os.urandom(96 * MIB))])


@pytest.fixture
def backup_process(tmp_path: Path) -> Iterator[Starter]:
    started: list[subprocess.Popen[str]] = []

    def start(repo: Path, disk: Path, name: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), str(repo), str(disk), name],
                                stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_for_chunks(root: Path, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while len(files(root, "chunks")) < count:
        assert proc.poll() is None, "the backup ended before it could be cut"
        assert time.monotonic() < deadline
        time.sleep(0.01)


def freeze(proc: subprocess.Popen[str]) -> None:
    """SIGSTOP, then wait until the process is stopped: the signal only asks, and a rename
    the backup is making meanwhile would still land after a listing taken at once."""
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 30
    stat = Path(f"/proc/{proc.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "the backup did not stop"
        time.sleep(0.005)


def test_kill_9_mid_backup_leaves_a_valid_repository(tmp_path: Path, big_image: Path,
                                                     backup_process: Starter) -> None:
    root = tmp_path / "repo"
    repo = BackupRepository(root, chunk_size=SMALL_CHUNKS)
    vm = memory_vm(memory_host(), "kept", image(tmp_path / "s.raw", 8 * MIB, [(0, pattern(1, MIB))]))
    before = repo.backup(vm)
    proc = backup_process(root, big_image, "cut")
    wait_for_chunks(root, 200, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.id for p in repo.points()] == [before.id]  # the cut point never appears
    assert files(root, "locks")  # its lease is left behind...
    report = repo.verify()
    assert report.ok, report.problems
    after = repo.backup(vm)  # ...and the next backup works and cleans up
    assert [p.id for p in repo.points()] == [before.id, after.id]
    assert files(root, "locks") == []
    assert not [p for p in root.rglob("*") if TEMP in p.name]
    pruned = repo.prune(keep_last=5)
    assert pruned.removed_chunks > 100  # the cut backup's chunks, which nothing references
    assert repo.verify().ok
    assert memory_disk(repo.restore(after, to=memory_host("t"), name="r")) == memory_disk(vm)


def test_prune_beside_a_backup_in_flight_removes_none_of_its_chunks(
        tmp_path: Path, big_image: Path, backup_process: Starter) -> None:
    root = tmp_path / "repo"
    repo = BackupRepository(root, chunk_size=SMALL_CHUNKS)
    vm = memory_vm(memory_host(), "old", image(tmp_path / "s.raw", 8 * MIB, [(0, pattern(2, MIB))]))
    repo.backup(vm)
    proc = backup_process(root, big_image, "inflight")
    wait_for_chunks(root, 100, proc)
    freeze(proc)  # frozen mid-way: alive, its lease live, its point unwritten
    try:
        written = set(files(root, "chunks"))
        report = repo.prune(keep_last=0)  # every point goes: nothing is referenced any more
        assert report.chunks_deferred and report.removed_chunks == 0
        assert written <= set(files(root, "chunks"))
    finally:
        proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    point = repo.point(out.strip())
    assert [p.id for p in repo.points()] == [point.id]
    assert repo.verify().ok
    restored = repo.restore(point, to=memory_host("t"), name="r")
    assert memory_disk(restored) == big_image.read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_fails_the_backup_cleanly(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "full", "24m") as root:
        repo = BackupRepository(root / "repo")
        host = memory_host()
        small = memory_vm(host, "small", image(tmp_path / "s.raw", 8 * MIB, [(0, pattern(3, 2 * MIB))]))
        before = repo.backup(small)
        big = memory_vm(host, "big", image(tmp_path / "b.raw", 64 * MIB, [(0, os.urandom(48 * MIB))]))
        with pytest.raises(StorageFull):
            repo.backup(big)
        assert [p.id for p in repo.points()] == [before.id]
        assert repo.verify().ok
        after = repo.backup(small)  # room for an index and a point: every chunk is there
        assert after.stored_bytes < 4096
        assert not [p for p in (root / "repo").rglob("*") if TEMP in p.name]
        assert repo.prune(keep_last=5).removed_chunks > 0  # the failed backup's chunks
        assert repo.verify().ok
        assert memory_disk(repo.restore(after, to=memory_host("t"), name="r")) == memory_disk(small)


def test_two_backup_processes_at_once_both_land(tmp_path: Path, backup_process: Starter) -> None:
    root = tmp_path / "repo"
    repo = BackupRepository(root, chunk_size=SMALL_CHUNKS)
    shared = os.urandom(8 * MIB)  # both disks hold it: the two race to write the same chunks
    first = image(tmp_path / "a.raw", 32 * MIB, [(0, shared), (16 * MIB, os.urandom(8 * MIB))])
    second = image(tmp_path / "b.raw", 32 * MIB, [(0, shared), (16 * MIB, os.urandom(8 * MIB))])
    procs = [backup_process(root, first, "one"), backup_process(root, second, "two")]
    ids = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        ids.append(out.strip())
    assert sorted(p.id for p in repo.points()) == sorted(ids)
    assert {p.vm_name for p in repo.points()} == {"one", "two"}
    report = repo.verify()
    assert report.ok, report.problems
    assert files(root, "locks") == []
    for point, disk in zip(ids, (first, second), strict=True):
        restored = repo.restore(point, to=memory_host("t"), name=f"r-{point[-4:]}")
        assert memory_disk(restored) == disk.read_bytes()
