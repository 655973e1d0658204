"""PVE tasks (UPIDs) as anyvirt task waits, on the kit's polling loop.

A UPID names the node that runs the task (``UPID:node:pid:pstart:start:type:id:user:``),
so it is polled there. ``OK`` and ``WARNINGS: n`` both end a task well (the
warnings are kept, logged and reported as progress); any other exit status
is ``TaskFailed`` with the task's log attached. ``Task.cancel()`` sends
``DELETE .../tasks/{upid}``, which stops the worker.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from attrs import frozen

from anyvirt.errors import AnyvirtError, InvalidSpec, TaskFailed
from anyvirt.kit import polling
from anyvirt.tasks import Job
from anyvirt_proxmox.errors import ending_kind
from anyvirt_proxmox.session import Session

log = logging.getLogger("anyvirt.proxmox")

UPID = re.compile(r"^UPID:(?P<node>[A-Za-z0-9][A-Za-z0-9-]*):[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:"
                  r"[0-9A-Fa-f]{8}:(?P<type>[^:\s]+):(?P<id>[^:\s]*):(?P<user>[^:\s]+):$")
CANCEL_GRACE = 10.0  # seconds to wait for a task to end after DELETE
LOG_LINES = 500
CLEANUP_SECONDS = 120.0


@frozen
class TaskOutcome:
    upid: str
    exitstatus: str
    warnings: tuple[str, ...] = ()


def upid_node(upid: str) -> str:
    match = UPID.match(upid) if isinstance(upid, str) else None
    if match is None:
        raise InvalidSpec(f"not a PVE task id (UPID): {upid!r}")
    return match.group("node")


def cleanup_job(what: str) -> Job:
    """A fresh job for undoing a failed operation: the failed one may be cancelled or out of time."""
    return Job(f"cleaning up after {what}", CLEANUP_SECONDS)


def task_log(session: Session, upid: str) -> str:
    with contextlib.suppress(AnyvirtError):
        lines = session.get(("nodes", upid_node(upid), "tasks", upid, "log"), "reading a task log",
                            limit=LOG_LINES)
        return "\n".join(str(line.get("t", "")) for line in lines or ())
    return ""


def stop_task(session: Session, upid: str, what: str) -> None:
    session.delete(("nodes", upid_node(upid), "tasks", upid), f"stopping {what}")


def wait_task(session: Session, upid: str, job: Job, what: str) -> TaskOutcome:
    """Poll ``upid`` on its node until it ends: its outcome, or TaskFailed / Cancelled / Timeout."""
    node = upid_node(upid)

    def check() -> polling.Status[TaskOutcome]:
        status = session.get(("nodes", node, "tasks", upid, "status"), f"reading the state of {what}")
        if status.get("status") != "stopped":
            return polling.running(message=what)
        return _ending(session, upid, str(status.get("exitstatus", "")), what)

    return polling.poll(check, job, what, task_id=upid, cancel=lambda: stop_task(session, upid, what),
                        first_interval=0.02, cancel_grace=CANCEL_GRACE)


def _ending(session: Session, upid: str, exitstatus: str, what: str) -> polling.Status[TaskOutcome]:
    if exitstatus == "OK":
        return polling.succeeded(TaskOutcome(upid, exitstatus))
    if exitstatus.startswith("WARNINGS:"):
        lines = task_log(session, upid).splitlines()
        warnings = tuple(line for line in lines if line.startswith("WARN")) or (exitstatus,)
        for line in warnings:
            log.warning("%s: %s", what, line)
        return polling.Status(done=True, result=TaskOutcome(upid, exitstatus, warnings),
                              message=f"{what}: {exitstatus.lower()}")
    failure: TaskFailed = polling.task_failed(what, exitstatus, task_id=upid, fault=ending_kind(exitstatus),
                                              log=task_log(session, upid))
    return polling.failed(failure)


def run_task(session: Session, method: str, path: tuple[object, ...], job: Job, what: str,
             started: list[str] | None = None, **params: Any) -> TaskOutcome:
    """Start a task (a write) and wait for it. A job already cancelled or out of time starts
    nothing; the UPID goes to ``started`` so a caller can clean up after it."""
    job.check()
    upid = session.call(method, path, what, **params)
    if not isinstance(upid, str):
        raise TaskFailed(f"{what}: PVE answered without a task id", task_id="")
    if started is not None:
        started.append(upid)
    return wait_task(session, upid, job, what)


def settle(session: Session, upids: list[str], what: str) -> None:
    """Stop started tasks and wait for them to end, so cleanup sees whatever they made."""
    job = cleanup_job(what)
    for upid in upids:
        with contextlib.suppress(AnyvirtError):
            stop_task(session, upid, what)
        with contextlib.suppress(AnyvirtError):
            wait_task(session, upid, job, what)
