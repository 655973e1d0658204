"""The task model: inline and background runs, progress, timeouts, cancellation."""

from __future__ import annotations

import threading
import time

import pytest

from anyvirt.errors import Cancelled, InvalidState, NotSupported, Timeout
from anyvirt.tasks import Job, Task, TaskState, run


def test_inline_run_returns_the_result() -> None:
    assert run("add", lambda job: 1 + 1, wait=True, timeout=5) == 2


def test_background_run_reports_progress() -> None:
    seen: list[float | None] = []

    def work(job: Job) -> str:
        for pct in (25, 50, 75):
            job.progress(pct, f"{pct}%")
        return "done"

    task = run("steps", work, wait=False, timeout=5, on_progress=lambda t: seen.append(t.progress))
    assert isinstance(task, Task)
    assert task.wait(5) == "done"
    assert seen == [25, 50, 75, 100]
    assert task.state is TaskState.SUCCEEDED


def test_errors_are_re_raised_by_wait() -> None:
    def work(job: Job) -> None:
        raise InvalidState("nope")

    task = run("fails", work, wait=False, timeout=5)
    assert isinstance(task, Task)
    with pytest.raises(InvalidState, match="nope"):
        task.wait(5)
    assert task.state is TaskState.FAILED


def test_the_job_deadline_bounds_the_work() -> None:
    def work(job: Job) -> None:
        job.wait_for(lambda: False, "something that never happens", interval=0.01)

    started = time.monotonic()
    with pytest.raises(Timeout, match="something that never happens"):
        run("slow", work, wait=True, timeout=0.2)
    assert time.monotonic() - started < 2


def test_wait_timeout_does_not_kill_the_task() -> None:
    gate = threading.Event()
    task = run("gated", lambda job: gate.wait(5), wait=False, timeout=10)
    assert isinstance(task, Task)
    with pytest.raises(Timeout):
        task.wait(0.05)
    gate.set()
    assert task.wait(5) is True


def test_cancel_runs_the_platform_hook_and_ends_the_task() -> None:
    hooked = threading.Event()

    def work(job: Job) -> None:
        job.on_cancel(hooked.set)
        while True:
            job.sleep(0.01)

    task = run("cancellable", work, wait=False, timeout=10)
    assert isinstance(task, Task)
    time.sleep(0.05)
    task.cancel()
    with pytest.raises(Cancelled):
        task.wait(5)
    assert hooked.is_set()
    assert task.state is TaskState.CANCELLED


def test_cancel_where_unsupported_says_so() -> None:
    task = Task("x", lambda job: None, cancellable=False, backend="vbox")
    with pytest.raises(NotSupported, match=r"vbox does not support task\.cancel"):
        task.cancel()


def test_result_of_an_unfinished_task() -> None:
    task = Task("x", lambda job: None)
    with pytest.raises(InvalidState):
        task.result()


def test_a_failing_progress_callback_does_not_abandon_the_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import anyvirt
    from anyvirt import VMSpec
    from anyvirt.memory import reset
    from anyvirt.testing.plugin import unique_name

    def broken(task: Task[object]) -> None:
        raise RuntimeError("the progress bar fell over")

    name = unique_name("tasks")
    try:
        host = anyvirt.connect(f"memory://{name}")
        vm = host.vms.create(VMSpec(name="web"), on_progress=broken)
        assert vm.start(on_progress=broken).state is anyvirt.PowerState.RUNNING
        assert "the progress bar fell over" in caplog.text
    finally:
        reset(name)
