"""A deadline that arrives at a chosen point of a task's work, with no timing luck.

A move's deadline may fall anywhere in its work; the one place it must never
fall unnoticed is between the last check and the deletion of the source. A
sweep runs the same move once per point (every progress report, and every
platform call a test counts with :meth:`DeadlineAt.point`) and makes the
deadline arrive exactly there: the task is expired as its watchdog does at the
deadline, from within the work, so what follows is the same for every run.
Each outcome must then be one of two: ``Timeout`` with the source intact and
nothing left on the target, or success with the result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs

from anyvirt.errors import Timeout
from anyvirt.tasks import Task

T = TypeVar("T")
WAIT_S = 120.0  # for the task handle, and for its work to end after a Timeout


@attrs.frozen
class Outcome(Generic[T]):
    fired: bool  #: whether the work reached the chosen point
    result: T | None  #: the result, when the task succeeded
    error: BaseException | None  #: what the caller got instead


class DeadlineAt:
    """Expire the task at its work's ``at``-th point (1-based), counting only points in
    threads other than the caller's (the gate's checks before the task are not work)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.seen = 0
        self.fired = False
        self.task: Task[Any] | None = None
        self._caller = threading.current_thread()
        self._known = threading.Event()
        self._lock = threading.Lock()

    def attach(self, task: Task[Any]) -> None:
        """The task to expire (a ``wait=False`` caller gives it here)."""
        self.task = task
        self._known.set()

    def on_progress(self, task: Task[Any]) -> None:
        """The ``on_progress`` callback: knows the task, and counts each report as a point."""
        if self.task is None:
            self.attach(task)
        self.point()

    def point(self) -> None:
        if threading.current_thread() is self._caller:
            return
        if not self._known.wait(WAIT_S):
            raise RuntimeError("the sweep never learned its task: attach() it or pass on_progress")
        with self._lock:
            self.seen += 1
            due = self.seen == self.at
        if due and self.task is not None:
            self.fired = True
            self.task._expire()  # exactly what the watchdog does when the deadline arrives

    def outcome(self, call: Callable[[], T]) -> Outcome[T]:
        """Run ``call`` (the move, waiting for its task); after a Timeout, wait for the work
        behind it to end too, so what is checked next is its final state."""
        try:
            result = call()
        except Timeout as error:
            thread = getattr(self.task, "_thread", None)
            if thread is not None:
                thread.join(WAIT_S)
                if thread.is_alive():
                    raise RuntimeError("the work went on after its Timeout") from error
            return Outcome(self.fired, None, error)
        return Outcome(self.fired, result, None)


__all__ = ["DeadlineAt", "Outcome"]
