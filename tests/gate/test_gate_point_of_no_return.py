"""Deleting a move's source is its point of no return (``Job.commit``).

Before it, cancel and the deadline stop the move, atomically with the task's
own timeout: the caller told ``Timeout`` finds the source intact and nothing on
the target. After it, the move completes and the caller is told so, even past
the deadline. Proven for the task model itself, then by a deadline sweep over
every point of the memory backend's moves (the VirtualBox sweep, on the real
7.2, is in its backend's tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import anyvirt
from anyvirt import DiskSpec, NicSpec, VMSpec
from anyvirt.errors import Cancelled, Timeout
from anyvirt.memory import reset
from anyvirt.model import MigrationResult
from anyvirt.tasks import Job, Task, TaskState
from anyvirt.testing.deadline_sweep import DeadlineAt
from anyvirt.testing.plugin import unique_name

MAX_POINTS = 200  # a move of the memory backend has a few dozen


# ---------------------------------------------------------------- the task model
def test_work_past_its_commit_outlives_the_deadline_and_succeeds() -> None:
    def work(job: Job) -> str:
        job.commit("deleting the source")
        time.sleep(0.5)  # well past the deadline (0.1 s) and the watchdog's grace
        job.check()  # the deadline no longer stops it
        assert job.remaining(7.0) == 7.0 and job.deadline is None
        return "moved"

    task = Task("move", work, timeout=0.1).start()
    assert task.wait(10) == "moved"
    assert task.state is TaskState.SUCCEEDED


def test_a_commit_after_the_timeout_was_reported_raises_and_nothing_follows() -> None:
    reached: list[str] = []
    expired = threading.Event()

    def work(job: Job) -> None:
        expired.wait(10)
        job.commit("deleting the source")
        reached.append("deleted")  # must never run

    task = Task("move", work, timeout=600)
    task.start()
    task._expire()  # the deadline, now
    expired.set()
    with pytest.raises(Timeout):
        task.wait(10)
    assert task._thread is not None
    task._thread.join(10)
    assert reached == []


def test_a_commit_past_the_deadline_before_the_watchdog_raises_timeout() -> None:
    def work(job: Job) -> None:
        time.sleep(0.06)  # past the deadline, inside the watchdog's grace
        job.commit("deleting the source")

    with pytest.raises(Timeout):
        Task("move", work, timeout=0.05).run_here()


def test_cancel_before_the_commit_stops_and_after_it_is_refused_quietly() -> None:
    committed, go_on = threading.Event(), threading.Event()

    def work(job: Job) -> str:
        job.commit("deleting the source")
        committed.set()
        go_on.wait(10)
        return "moved"

    task = Task("move", work, timeout=600).start()
    assert committed.wait(10)
    task.cancel()
    go_on.set()
    assert task.wait(10) == "moved"

    gate = threading.Event()

    def stopped(job: Job) -> None:
        gate.wait(10)
        job.commit("deleting the source")

    task2 = Task("move", stopped, timeout=600).start()
    task2.cancel()
    gate.set()
    with pytest.raises(Cancelled):
        task2.wait(10)


def test_phases_share_the_commit() -> None:
    job = Job("move", timeout=600)
    phase = job.span(0, 50)
    phase.commit("deleting the source")
    assert job.committed and job.deadline is None and not job.request_cancel()


# ---------------------------------------------------------------- sweeps on memory://
@pytest.fixture
def two_hosts() -> Iterator[tuple[anyvirt.Host, anyvirt.Host]]:
    a, b = unique_name("sweep-src"), unique_name("sweep-dst")
    with anyvirt.connect(f"memory://{a}") as src, anyvirt.connect(f"memory://{b}") as dst:
        yield src, dst
    reset(a)
    reset(b)


def _made(host: anyvirt.Host, tmp_path: Path) -> anyvirt.VM:
    image = tmp_path / "boot.img"
    image.write_bytes(b"\xeb\x3c" + b"\x00" * 508 + b"\x55\xaa" + b"payload" * 100)
    return host.vms.create(VMSpec(name="mover", cpus=1, memory_mib=256,
                                  disks=[DiskSpec(image=str(image))], nics=[NicSpec()]))


def _sweep(two_hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path, move: str) -> list[str]:
    """Every point of one move, the deadline arriving there; what each run ended as."""
    src, dst = two_hosts
    seen = []
    for at in range(1, MAX_POINTS):
        vm = _made(src, tmp_path)
        source_id = vm.id
        sweep = DeadlineAt(at)
        if move == "migrate":
            task = vm.migrate(to=dst, live=False, wait=False, timeout=600,
                              on_progress=sweep.on_progress)
            sweep.attach(task)
            got = sweep.outcome(task.wait)
        else:
            got = sweep.outcome(lambda vm=vm, sweep=sweep: anyvirt.migrate(
                vm, to=dst, delete_source=True, timeout=600, on_progress=sweep.on_progress))
        if got.error is not None:
            assert isinstance(got.error, Timeout), got.error
            assert [v.id for v in src.vms.list()] == [source_id], f"point {at}: source lost"
            assert dst.vms.list() == [], f"point {at}: Timeout, yet the target has a copy"
            seen.append("timeout")
            src.vms.get(source_id).delete()
        else:
            assert isinstance(got.result, MigrationResult)
            assert src.vms.list() == [], f"point {at}: success, yet the source stays"
            assert [v.id for v in dst.vms.list()] == [got.result.vm_id]
            seen.append("moved")
            dst.vms.get(got.result.vm_id).delete()
        if not got.fired:
            return seen
    raise AssertionError(f"the move has more than {MAX_POINTS} points")


@pytest.mark.parametrize("move", ["migrate", "cross-platform"])
def test_a_deadline_at_any_point_of_a_move_is_timeout_with_the_source_or_success(
        two_hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path, move: str) -> None:
    seen = _sweep(two_hosts, tmp_path, move)
    # the last run never met its deadline; before it, every point was one of the two outcomes,
    # and a deadline at the very end (after the point of no return) is a success
    assert seen[-1] == "moved" and "timeout" in seen
    assert seen[-2] == "moved", "a deadline after the source was deleted must not be Timeout"


def test_the_cli_waits_for_a_move_past_its_commit_and_reports_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from anyvirt.cli import waiting

    monkeypatch.setattr(waiting, "DEADLINE_GRACE_S", 0.05)  # the CLI's own guard, made short

    def work(job: Job) -> str:
        job.commit("deleting the source")
        time.sleep(0.6)  # past the deadline and the CLI's guard
        return "moved"

    got = waiting.wait_for("move", lambda cb: Task("move", work, timeout=0.1).start(),
                           timeout=0.1, json_mode=True)
    assert got == "moved"


def test_a_source_that_cannot_be_deleted_after_the_commit_is_a_warning_not_a_failed_move(
        two_hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path) -> None:
    from anyvirt.errors import TaskFailed
    from anyvirt.memory import inject_failure

    src, dst = two_hosts
    vm = _made(src, tmp_path)
    inject_failure(src.driver.native.name, "delete_vm", TaskFailed("injected: disk busy"))
    result = anyvirt.migrate(vm, to=dst, delete_source=True)
    assert [v.id for v in dst.vms.list()] == [result.vm_id], "the verified copy is the VM now"
    assert any(w.startswith("source-not-deleted") and "disk busy" in w for w in result.warnings)


def test_delete_source_is_refused_before_anything_when_it_could_not_run(
        two_hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path) -> None:
    from anyvirt.errors import InvalidSpec, InvalidState

    src, dst = two_hosts
    vm = _made(src, tmp_path)
    vm.start()
    with pytest.raises(InvalidSpec, match="snapshot=True"):
        anyvirt.migrate(vm, to=dst, delete_source=True, snapshot=True)
    vm.stop(force=True)
    vm.clone("user", linked=True)
    with pytest.raises(InvalidState, match="linked clones"):
        anyvirt.migrate(vm, to=dst, delete_source=True)
    assert dst.vms.list() == [] and len(src.vms.list()) == 2
