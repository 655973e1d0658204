"""Waiting for long operations at the command line: progress, patience notices, Ctrl-C.

Every long operation runs as a ``Task`` (``wait=False``) that this module
waits for in short slices, so the main thread stays ready for Ctrl-C. On
Ctrl-C the command knows what it was waiting for: a platform task (a vSphere
task, a Proxmox UPID) goes on without us, and the message gives its id; work
anyvirt drives itself is cancelled where it can be, and the message says
whether that took.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from anyvirt.cli.progress import progress_bar, say_above, wanted
from anyvirt.errors import Timeout
from anyvirt.tasks import ProgressCallback, Task, TaskState

T = TypeVar("T")

#: the exit code of a command ended by Ctrl-C (128 + SIGINT, what a shell reports)
INTERRUPTED_EXIT = 130

#: how long Ctrl-C waits for a cancelled task to stop before saying it may go on
CANCEL_GRACE_S = 5.0
#: how far past its own deadline a task may run before the CLI stops waiting anyway
DEADLINE_GRACE_S = 30.0

_waiting: list[Task[Any]] = []


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while waiting, with what it left behind (see ``interrupted_message``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Notice:
    """A line on stderr once an operation has taken ``after`` seconds (e.g. a guest ignoring ACPI)."""

    def __init__(self, after: float, text: str) -> None:
        self.after = after
        self.text = text


def wait_for(
    description: str,
    start: Callable[[ProgressCallback | None], Task[T]],
    *,
    timeout: float | None,
    json_mode: bool,
    notice: Notice | None = None,
) -> T:
    """Start the task (``start(on_progress)``), show progress, and return its result."""
    with progress_bar(description, wanted(json_mode)) as on_progress:
        task = start(on_progress)
        _waiting.append(task)
        try:
            begun = time.monotonic()
            limit = None if timeout is None else begun + timeout + DEADLINE_GRACE_S
            noticed = notice is None
            while not task.done:
                task_done_within(task, 0.2)
                now = time.monotonic()
                if not noticed and notice is not None and now - begun >= notice.after:
                    noticed = True
                    say_above(notice.text)
                # past its point of no return (a move deleting its source) the task ends with
                # its own outcome, which is what the user must be told
                if limit is not None and now > limit and not task.done and not task.committed:
                    raise Timeout(f"{description}: no answer within {timeout:g} s")
            return task.result()
        except KeyboardInterrupt as exc:
            # said now, while the connection is still open for a cancel
            raise Interrupted(interrupted_message()) from exc
        finally:
            _waiting.remove(task)


@contextlib.contextmanager
def until_interrupted() -> Iterator[None]:
    """Around a command that runs until Ctrl-C by design (``vm console -f``, ``events``,
    ``vms --watch``): Ctrl-C is how it ends, not a failure to report, so it exits 130 (as
    ``tail -f`` does, killed by SIGINT) without an ``error:`` line. Nothing on the platform
    was interrupted: these commands only read."""
    try:
        yield
    except KeyboardInterrupt:
        raise click.exceptions.Exit(INTERRUPTED_EXIT) from None


def task_done_within(task: Task[Any], seconds: float) -> bool:
    try:
        task.wait(seconds)
    except Timeout:
        return False
    except Exception:  # the task's own error: result() raises it (Ctrl-C must get through)
        return True
    return True


def interrupted_message() -> str:
    """What Ctrl-C leaves behind, said once: does the platform carry on, under which task id."""
    if not _waiting:
        return "interrupted"
    task = _waiting[-1]
    if task.done:
        return f"interrupted: {task.name} had already {task.state}"
    if task.committed:
        # past its point of no return: stopping now would leave it half done, so it finishes
        with contextlib.suppress(Exception):
            task.wait(None)
        return f"interrupted: {task.name} was past its point of no return and {task.state}"
    if task.native_id:
        return (f"interrupted: {task.name} carries on on the platform as task {task.native_id}; "
                "this command only stopped waiting for it")
    if task.cancellable:
        with contextlib.suppress(Exception):  # a failing cancel is reported as "may carry on" below
            task.cancel()
        task_done_within(task, CANCEL_GRACE_S)
        if task.state is TaskState.CANCELLED:
            return f"interrupted: {task.name} was cancelled; nothing carries on"
        if task.done:
            return f"interrupted: {task.name} had {task.state} meanwhile"
    # anyvirt's own task id means nothing once this process is gone: not worth printing
    return (f"interrupted: {task.name} was sent to the platform and may still complete there; "
            "`anyvirt vms` shows how it ends")
