"""Waiting for a platform's own task (a vSphere Task, a Proxmox UPID, a VirtualBox progress).

Every platform hands back a handle and wants to be asked "done yet?". The
loop around that question is the same everywhere and easy to get subtly
wrong, so it lives here once:

- intervals grow (quick tasks end in tens of milliseconds, long ones are not
  hammered), capped, and never sleep past the Job's deadline;
- ``Task.cancel()`` reaches the platform through the cancel hook; the wait
  then goes on a while (the platform may still finish first, or report the
  cancel), so the caller learns how the task really ended;
- the end maps onto anyvirt's errors: past the deadline ``Timeout`` (saying
  the platform task may still run), cancelled ``Cancelled``, failed
  ``TaskFailed`` (or whatever error the platform's status carries).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from attrs import frozen

from anyvirt.errors import AnyvirtError, Cancelled, TaskFailed, Timeout
from anyvirt.tasks import Job

T = TypeVar("T")

FIRST_INTERVAL = 0.02  # simulators and quick real tasks end within tens of milliseconds
MAX_INTERVAL = 1.0
GROWTH = 1.5
CANCEL_GRACE = 30.0  # seconds to let the platform end a task after its cancel


@frozen
class Status(Generic[T]):
    """One answer to "done yet?". Build it with :func:`running`, :func:`succeeded`, :func:`failed`."""

    done: bool
    result: T | None = None
    error: AnyvirtError | None = None
    progress: float | None = None
    message: str = ""


def running(progress: float | None = None, message: str = "") -> Status[T]:
    return Status(done=False, progress=progress, message=message)


def succeeded(result: T) -> Status[T]:
    return Status(done=True, result=result)


def failed(error: AnyvirtError) -> Status[T]:
    """The task ended in failure; ``error`` is raised (``Cancelled`` if the job was cancelled)."""
    return Status(done=True, error=error)


def poll(
    check: Callable[[], Status[T]],
    job: Job,
    what: str,
    *,
    task_id: str = "",
    cancel: Callable[[], None] | None = None,
    first_interval: float = FIRST_INTERVAL,
    max_interval: float = MAX_INTERVAL,
    cancel_grace: float = CANCEL_GRACE,
) -> T:
    """Call ``check`` until the task is done; its result, or Timeout / Cancelled / TaskFailed.

    ``cancel`` is the platform's cancel (hooked onto the job; its AnyvirtError,
    e.g. "this task cannot be cancelled", is swallowed: the wait reports the
    end). ``task_id`` becomes ``job.native_id`` and appears in messages.
    """
    label = f" ({task_id})" if task_id else ""
    if task_id:
        job.native_id = task_id
    if cancel is not None:
        platform_cancel = cancel

        def hook() -> None:
            with contextlib.suppress(AnyvirtError):
                platform_cancel()

        job.on_cancel(hook)
    delay = first_interval
    cancelled_at: float | None = None
    while True:
        status = check()
        if status.progress is not None or status.message:
            job.progress(status.progress, status.message or what)
        if status.done:
            if status.error is None:
                return status.result  # type: ignore[return-value]
            if job.cancelled and not isinstance(status.error, Cancelled):
                raise Cancelled(f"{what} was cancelled{label}") from status.error
            raise status.error
        now = time.monotonic()
        late = job.deadline is not None and now >= job.deadline
        if job.cancelled:
            if cancelled_at is None:
                cancelled_at = now
            if late or now - cancelled_at > cancel_grace or cancel is None:
                raise Cancelled(f"{what} was cancelled{label}")
        elif late:
            raise Timeout(f"{what} did not finish within {job.timeout:g} s; the platform "
                          f"task{label} may still be running")
        left = job.remaining(delay)
        time.sleep(delay if left is None else max(left, 0.001))
        delay = min(delay * GROWTH, max_interval)


def task_failed(what: str, message: str, *, task_id: str = "", fault: str = "",
                log: str = "") -> TaskFailed:
    """The usual failure: "<what> failed: <platform text> (<fault>)"."""
    detail = f" ({fault})" if fault else ""
    return TaskFailed(f"{what} failed: {message}{detail}", task_id=task_id, fault=fault,
                      log=log or message)


__all__ = ["Status", "failed", "poll", "running", "succeeded", "task_failed"]
