"""Polling a platform task: growing intervals, deadline, cancel through the platform's hook."""

from __future__ import annotations

import threading
import time

import pytest

from anyvirt.errors import Cancelled, TaskFailed, Timeout
from anyvirt.kit import polling
from anyvirt.tasks import Job


class PlatformTask:
    """A platform task that ends after ``polls`` questions (or when cancelled, if it can)."""

    def __init__(self, polls: int, *, fails: bool = False, cancellable: bool = True) -> None:
        self.polls = polls
        self.asked = 0
        self.fails = fails
        self.cancellable = cancellable
        self.cancelled = False
        self.asked_at: list[float] = []

    def status(self) -> polling.Status[str]:
        self.asked += 1
        self.asked_at.append(time.monotonic())
        if self.cancelled:
            return polling.failed(TaskFailed("the platform says: cancelled"))
        if self.asked >= self.polls:
            if self.fails:
                return polling.failed(polling.task_failed("cloning", "disk full", task_id="t-1",
                                                          fault="NoDiskSpace"))
            return polling.succeeded("done")
        return polling.running(100.0 * self.asked / self.polls)

    def cancel(self) -> None:
        if self.cancellable:
            self.cancelled = True


def test_result_progress_and_growing_intervals() -> None:
    task = PlatformTask(8)
    seen: list[float | None] = []
    job = Job("clone", 30, lambda pct, _msg: seen.append(pct))
    assert polling.poll(task.status, job, "cloning", task_id="task-7") == "done"
    assert job.native_id == "task-7"
    assert seen == [12.5, 25.0, 37.5, 50.0, 62.5, 75.0, 87.5]
    gaps = [b - a for a, b in zip(task.asked_at, task.asked_at[1:], strict=False)]
    assert gaps[-1] > gaps[0] * 3  # 1.5 ** 6 = 11 times the first interval


def test_failure_is_the_platform_error() -> None:
    with pytest.raises(TaskFailed, match="cloning failed: disk full") as caught:
        polling.poll(PlatformTask(2, fails=True).status, Job("clone", 30), "cloning")
    assert (caught.value.task_id, caught.value.fault) == ("t-1", "NoDiskSpace")


def test_deadline_is_a_timeout_that_says_the_task_may_run_on() -> None:
    job = Job("clone", 0.2)
    started = time.monotonic()
    with pytest.raises(Timeout, match="may still be running"):
        polling.poll(PlatformTask(10**9).status, job, "cloning", task_id="t-9")
    assert time.monotonic() - started < 1.5


def test_cancel_reaches_the_platform_and_ends_cancelled() -> None:
    task = PlatformTask(10**9)
    job = Job("clone", 30)
    threading.Timer(0.1, job.request_cancel).start()
    with pytest.raises(Cancelled):
        polling.poll(task.status, job, "cloning", cancel=task.cancel)
    assert task.cancelled


def test_a_task_the_platform_cannot_cancel_waits_out_the_grace() -> None:
    task = PlatformTask(10**9, cancellable=False)
    job = Job("clone", 30)
    job.request_cancel()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        polling.poll(task.status, job, "cloning", cancel=task.cancel, cancel_grace=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert task.asked > 1
