"""Waiting for vSphere tasks through the PropertyCollector.

Only ``info.state``, ``info.progress``, ``info.error`` and ``info.result`` are
read: reading the whole ``task.info`` is both slower and broken on vcsim 0.24.2
(snapshot tasks put the snapshot in ``info.entity``, which fails to
serialise). The loop itself (growing intervals, deadline, cancel grace) is the
kit's :func:`~anyvirt.kit.polling.poll`; ``CancelTask`` is its cancel hook, so
``Task.cancel()`` reaches vSphere, which cancels where the operation allows it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from anyvirt.errors import AnyvirtError, Cancelled, ConnectionFailed, OutcomeUnknown, TaskFailed
from anyvirt.kit import polling
from anyvirt.tasks import Job
from anyvirt_vsphere.collector import Collector
from anyvirt_vsphere.errors import fault_message, fault_type
from anyvirt_vsphere.sdk import vim, vmodl

TASK_PATHS = ("info.state", "info.progress", "info.error", "info.result")


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
    task_id = str(task._moId)

    def status() -> polling.Status[Any]:
        props = collector.one(task, vim.Task, TASK_PATHS, what=f"reading the state of {what}")
        if props is None:
            return polling.failed(TaskFailed(f"{what}: the task {task_id} vanished", task_id=task_id))
        state = props.get("info.state")
        if state == vim.TaskInfo.State.success:
            return polling.succeeded(props.get("info.result"))
        if state == vim.TaskInfo.State.error:
            return polling.failed(task_error(props.get("info.error"), what, task_id, job))
        progress = props.get("info.progress")
        return polling.running(None if progress is None else float(progress), what)

    def cancel() -> None:  # vSphere refuses to cancel some tasks; the wait reports the end
        session.call(task.CancelTask, f"cancelling {what}", read=False)

    try:
        return polling.poll(status, job, what, task_id=task_id, cancel=cancel)
    except OutcomeUnknown:
        raise
    except ConnectionFailed as exc:  # the task runs on (or ended) on the server all the same
        raise OutcomeUnknown(f"{exc}; vSphere task {task_id} had been started and may have "
                             "completed", task_id=task_id) from exc


def task_error(error: Any, what: str, task_id: str, job: Job) -> AnyvirtError:
    """The anyvirt error for a failed task's ``info.error`` (a LocalizedMethodFault)."""
    # pyVmomi hands a LocalizedMethodFault over as the fault itself (message in ``msg``)
    fault = error if isinstance(error, vmodl.MethodFault) else getattr(error, "fault", None)
    message = getattr(error, "localizedMessage", "") or (fault_message(fault) if fault else "")
    kind = fault_type(fault) if fault is not None else "unknown fault"
    if isinstance(fault, vmodl.fault.RequestCanceled) or job.cancelled:
        return Cancelled(f"{what} was cancelled (vSphere task {task_id})")
    return polling.task_failed(what, message, task_id=task_id, fault=kind)
