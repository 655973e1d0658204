"""Waiting for vSphere tasks through the PropertyCollector.

Only ``info.state``, ``info.progress``, ``info.error`` and ``info.result`` are
read: reading the whole ``task.info`` is both slower and broken on vcsim 0.24.2
(snapshot tasks put the snapshot in ``info.entity``, which fails to
serialise). Progress goes to ``job.progress``; ``job.on_cancel`` is hooked to
``CancelTask`` so ``Task.cancel()`` reaches vSphere, which cancels where the
operation allows it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from anyvirt.errors import AnyvirtError, Cancelled, TaskFailed, Timeout
from anyvirt.tasks import Job
from anyvirt_vsphere.collector import Collector
from anyvirt_vsphere.errors import fault_message, fault_type
from anyvirt_vsphere.sdk import vim, vmodl

TASK_PATHS = ("info.state", "info.progress", "info.error", "info.result")
FIRST_POLL = 0.02  # vcsim and quick real tasks finish in tens of milliseconds
MAX_POLL = 1.0
CANCEL_GRACE = 30.0  # seconds to wait for vSphere to end a task after CancelTask


CLEANUP_SECONDS = 120.0  # the budget for undoing a failed operation, its own deadline


def run_task(
    collector: Collector,
    start: Callable[[], Any],
    job: Job,
    what: str,
    started: list[Any] | None = None,
) -> Any:
    """Start a task with ``start()`` (a write: never repeated) and wait for its result.

    A job that is already cancelled or past its deadline starts nothing. The
    task is appended to ``started`` so a caller can :func:`settle` it after a
    timeout or cancel, before cleaning up what it made.
    """
    job.check()
    session = collector.session
    task = session.call(start, what, read=False)
    if started is not None:
        started.append(task)
    return wait_task(collector, task, job, what)


def cleanup_job(what: str) -> Job:
    """A fresh job for undoing a failed operation: the failed job may be cancelled or
    out of time, and cleanup must still run (within bounds)."""
    return Job(f"cleaning up after {what}", CLEANUP_SECONDS)


def settle(collector: Collector, tasks: list[Any], what: str) -> None:
    """Make sure started tasks have ended (cancelling them first) so that cleanup sees
    everything they made; used after a timeout or cancel left them running."""
    job = cleanup_job(what)
    for task in tasks:
        with contextlib.suppress(AnyvirtError):
            collector.session.call(task.CancelTask, f"cancelling {what}", read=False)
        with contextlib.suppress(AnyvirtError):
            wait_task(collector, task, job, what)


def wait_task(collector: Collector, task: Any, job: Job, what: str) -> Any:
    """Wait for ``task``: its result, or TaskFailed / Cancelled / Timeout."""
    session = collector.session
    job.native_id = str(task._moId)

    def cancel() -> None:
        # vSphere refuses to cancel some tasks; the wait goes on and reports the end
        with contextlib.suppress(AnyvirtError):
            session.call(task.CancelTask, f"cancelling {what}", read=False)

    job.on_cancel(cancel)
    delay = FIRST_POLL
    cancelled_at: float | None = None
    while True:
        props = collector.one(task, vim.Task, TASK_PATHS, what=f"reading the state of {what}")
        if props is None:
            raise TaskFailed(f"{what}: the task {task._moId} vanished", task_id=str(task._moId))
        state = props.get("info.state")
        progress = props.get("info.progress")
        if progress is not None:
            job.progress(float(progress), what)
        if state == vim.TaskInfo.State.success:
            return props.get("info.result")
        if state == vim.TaskInfo.State.error:
            raise task_error(props.get("info.error"), what, str(task._moId), job)
        if job.cancelled:
            # wait a while for vSphere to acknowledge the cancel (the task may still
            # finish first), but not past the deadline nor past CANCEL_GRACE
            if cancelled_at is None:
                cancelled_at = time.monotonic()
            late = job.deadline is not None and time.monotonic() > job.deadline
            if late or time.monotonic() - cancelled_at > CANCEL_GRACE:
                raise Cancelled(f"{what} was cancelled (vSphere task {task._moId})")
        elif job.deadline is not None and time.monotonic() > job.deadline:
            raise Timeout(
                f"{what} did not finish within {job.timeout:g} s; vSphere task {task._moId} "
                "may still be running"
            )
        time.sleep(min(delay, job.remaining(delay) or delay))
        delay = min(delay * 1.5, MAX_POLL)


def task_error(error: Any, what: str, task_id: str, job: Job) -> AnyvirtError:
    """The anyvirt error for a failed task's ``info.error`` (a LocalizedMethodFault)."""
    # pyVmomi hands a LocalizedMethodFault over as the fault itself (message in ``msg``)
    fault = error if isinstance(error, vmodl.MethodFault) else getattr(error, "fault", None)
    message = getattr(error, "localizedMessage", "") or (fault_message(fault) if fault else "")
    kind = fault_type(fault) if fault is not None else "unknown fault"
    if isinstance(fault, vmodl.fault.RequestCanceled) or job.cancelled:
        return Cancelled(f"{what} was cancelled (vSphere task {task_id})")
    return TaskFailed(f"{what} failed: {message} ({kind})", task_id=task_id, fault=kind, log=message)
