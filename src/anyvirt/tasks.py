"""One task model for every long operation.

Drivers do their work as plain blocking code and receive a :class:`Job`: it
carries the deadline (every wait has one), lets them report progress, tells
them when the caller cancelled, and lets them hook a platform's own cancel
(a vSphere ``CancelTask``, a libvirt ``abortJob``) onto ``Task.cancel()``.

A move that deletes its source has a point of no return: :meth:`Job.commit`.
Under the same lock the task's timeout and ``cancel()`` take, it either raises
``Cancelled``/``Timeout`` (the task has stopped, or must) or marks the work as
past that point; from then on neither stops it, and the task waits for its end
and reports its outcome, however late. So a caller is never told ``Timeout``
about a move whose source is then deleted.

Handles wrap that work in a :class:`Task`: with ``wait=True`` (the default)
it runs in the caller's thread and returns the result; with ``wait=False`` it
runs in a background thread and the caller gets the ``Task`` back.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from anyvirt.errors import AnyvirtError, Cancelled, InvalidState, NotSupported, Timeout
from anyvirt.model import Capability

T = TypeVar("T")

DEFAULT_TIMEOUT = 600.0
WATCHDOG_GRACE_S = 0.1  # past the deadline, the task fails whatever its work is doing
ProgressCallback = Callable[["Task[Any]"], None]
_ids = itertools.count(1)
log = logging.getLogger("anyvirt")


class TaskState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class _Control:
    """What a job and its phases (:meth:`Job.span`) share: the cancel flag, the platform's
    cancel hooks, and whether the work passed its point of no return."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.hooks: list[Callable[[], None]] = []
        self.committed = ""  # what the work committed to; "" before its point of no return


class Job:
    """The driver's side of a task: deadline, progress and cancellation."""

    def __init__(
        self,
        name: str = "",
        timeout: float | None = DEFAULT_TIMEOUT,
        on_progress: Callable[[float | None, str], None] | None = None,
        started: float | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        start = time.monotonic() if started is None else started
        self._deadline = None if timeout is None else start + timeout
        self.native_id = ""
        self._on_progress = on_progress
        self._control = _Control()

    @property
    def deadline(self) -> float | None:
        """When the work must stop (monotonic seconds); None when unbounded, and once the
        work passed its point of no return (:meth:`commit`)."""
        return None if self._control.committed else self._deadline

    # progress --------------------------------------------------------
    def progress(self, percent: float | None, message: str = "") -> None:
        if self._on_progress is not None:
            clamped = None if percent is None else max(0.0, min(100.0, float(percent)))
            self._on_progress(clamped, message)

    def span(self, low: float, high: float) -> Job:
        """This job for one phase of the work: the same deadline and cancellation, its
        progress (0 to 100) mapped onto ``low``..``high`` of this job's, so the phases of
        a long operation (export, import, verify) move one bar forwards only."""
        def mapped(percent: float | None, message: str) -> None:
            self.progress(None if percent is None else low + (high - low) * percent / 100.0,
                          message)

        phase = Job(self.name, None, mapped)
        phase.timeout, phase._deadline = self.timeout, self._deadline
        phase._control = self._control
        return phase

    # cancellation ----------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._control.cancel.is_set()

    @property
    def committed(self) -> bool:
        """Whether the work passed its point of no return (:meth:`commit`)."""
        return bool(self._control.committed)

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` (a platform cancel) when the caller cancels; at once if already cancelled."""
        self._control.hooks.append(hook)
        if self.cancelled:
            hook()

    def request_cancel(self) -> bool:
        """Ask the work to stop; False (and nothing asked) once it passed its point of no
        return, where stopping would leave a move half done."""
        if not self._stop():
            return False
        self._run_cancel_hooks()
        return True

    def _stop(self) -> bool:
        """Raise the cancel flag unless the work committed; the one decision, under the lock
        :meth:`commit` takes, between a task that stops and work that goes on."""
        with self._control.lock:
            if self._control.committed:
                return False
            self._control.cancel.set()
            return True

    def _run_cancel_hooks(self) -> None:
        for hook in list(self._control.hooks):
            try:
                hook()
            except Exception:  # noqa: S112 - a failing platform cancel must not mask the wait
                continue

    def commit(self, what: str) -> None:
        """Pass the point of no return (``what``: e.g. deleting a move's source).

        Raises ``Cancelled`` or ``Timeout`` if the work must stop, atomically with the
        task's timeout and ``cancel()``: a task that has reported ``Timeout`` never lets
        its work past here. Otherwise, from now on the deadline and cancel no longer
        stop the work (:meth:`check` passes, :meth:`remaining` gives only its cap), and
        the task waits for it and reports its outcome, even past its deadline."""
        with self._control.lock:
            if self._control.committed:
                return
            self.check()
            self._control.committed = what or "its point of no return"

    def check(self) -> None:
        """Raise ``Cancelled`` or ``Timeout`` if the work should stop now (never once it
        committed: see :meth:`commit`)."""
        if self._control.committed:
            return
        if self.cancelled:
            raise Cancelled(f"{self.name or 'task'} was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Timeout(f"{self.name or 'task'} did not finish within {self.timeout:g} s")

    # waiting ---------------------------------------------------------
    def remaining(self, cap: float | None = None) -> float | None:
        """Seconds left before the deadline (at most ``cap``); None when unbounded."""
        if self.deadline is None:
            return cap
        left = max(0.0, self.deadline - time.monotonic())
        return left if cap is None else min(left, cap)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early on cancel; raises when cancelled or past the deadline."""
        left = self.remaining(seconds)
        self._control.cancel.wait(seconds if left is None else left)
        self.check()

    def wait_for(
        self,
        predicate: Callable[[], bool],
        what: str,
        interval: float = 0.2,
        max_interval: float = 2.0,
    ) -> None:
        """Poll ``predicate`` with growing intervals until true, the deadline, or a cancel."""
        delay = interval
        while not predicate():
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise Timeout(f"timed out after {self.timeout:g} s waiting for {what}")
            left = self.remaining(delay)
            self._control.cancel.wait(delay if left is None else left)
            if self.cancelled and not self.committed:
                raise Cancelled(f"{self.name or 'task'} was cancelled while waiting for {what}")
            delay = min(delay * 1.5, max_interval)


class Task(Generic[T]):
    """A long operation: ``wait(timeout)``, ``progress``, ``cancel()``.

    ``progress`` is a percentage (0-100) where the platform reports one, else
    None; ``message`` is the latest progress text.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[Job], T],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        on_progress: ProgressCallback | None = None,
        cancellable: bool = True,
        backend: str = "",
        finish: Callable[[], None] | None = None,
        undo: Callable[[T], None] | None = None,
        started: float | None = None,
    ) -> None:
        self.id = f"anyvirt-{next(_ids)}"
        self.backend = backend
        self.name = name
        self.state = TaskState.QUEUED
        self.progress: float | None = None
        self.message = ""
        self.cancellable = cancellable
        self._work = work
        self._on_progress = on_progress
        self._job = Job(name, timeout, self._report, started=started)
        self._done = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._finish = finish
        self._undo = undo
        self._state_lock = threading.Lock()
        self._expired = False
        self._watchdog: threading.Timer | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def __repr__(self) -> str:
        pct = "" if self.progress is None else f" {self.progress:.0f}%"
        return f"<Task {self.id} {self.name!r} {self.state}{pct}>"

    @property
    def native_id(self) -> str:
        """The platform's own task id (vSphere task, Proxmox UPID), when there is one."""
        return self._job.native_id

    def _report(self, percent: float | None, message: str) -> None:
        if percent is not None:
            self.progress = percent
        if message:
            self.message = message
        if self._on_progress is not None:
            try:
                self._on_progress(self)
            except Exception:
                # the caller's display failing must not abandon the platform's work half done
                # (a VM half created, a disk half copied); cancel() is the way to stop it
                log.exception("progress callback of task %r failed; the task goes on", self.name)

    def _run(self) -> None:
        self.state = TaskState.RUNNING
        self.started_at = time.monotonic()
        result: T | None = None
        error: BaseException | None = None
        try:
            result = self._work(self._job)
        except BaseException as exc:  # handed to whoever waits
            error = exc
        finally:
            self._work_ended(result, error)

    def _work_ended(self, result: T | None, error: BaseException | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        with self._state_lock:
            expired = self._expired
            if not expired:
                self._result, self._error = result, error
                if error is None:
                    self.state = TaskState.SUCCEEDED
                elif isinstance(error, Cancelled):
                    self.state = TaskState.CANCELLED
                else:
                    self.state = TaskState.FAILED
                self.finished_at = time.monotonic()
        if expired and error is None and self._undo is not None:
            # the caller was told Timeout at the deadline: what finished late is rolled back,
            # while the operation still holds what it held
            try:
                self._undo(result)  # type: ignore[arg-type]
            except Exception:
                log.exception("rolling back task %r, finished after its deadline, failed", self.name)
        if self._finish is not None:
            try:
                self._finish()  # holds and reservations go back when the work really ends
            except Exception:
                log.exception("releasing what task %r held failed", self.name)
        if expired:
            return
        if error is None:
            self.progress = 100.0
            self._report(100.0, "")
        self._done.set()

    def _expire(self) -> None:
        """The deadline passed with the work still going: the task fails with Timeout now,
        the platform's work is asked to stop, and a result that still arrives is undone.
        Work past its point of no return (``Job.commit``) is not stopped: the task waits
        for it and reports what it did."""
        if self._done.is_set() or not self._job._stop():
            return
        with self._state_lock:
            if self._done.is_set():
                return
            self._expired = True
            undo = " and what it makes will be removed" if self._undo is not None else ""
            self._error = Timeout(
                f"{self.name} did not finish within {self._job.timeout:g} s; it was cancelled{undo}"
            )
            self.state = TaskState.FAILED
            self.finished_at = time.monotonic()
            self._done.set()
        self._job._run_cancel_hooks()

    # starting --------------------------------------------------------
    def _launch(self) -> None:
        if self._job.deadline is not None:
            # a little grace, so work that watches its own deadline reports what it waited for
            self._watchdog = threading.Timer(
                max(0.0, self._job.deadline - time.monotonic()) + WATCHDOG_GRACE_S, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()
        self._thread = threading.Thread(target=self._run, name=self.id, daemon=True)
        self._thread.start()
        log.debug("task %s started: %s", self.id, self.name)

    def run_here(self) -> T:
        """Run to the end and return the result (``wait=True``).

        With a timeout the work runs in a worker thread so the deadline bounds the
        whole operation, however long a platform call blocks; without one it runs
        in the calling thread.
        """
        if self._job.deadline is None:
            self._run()
            return self.result()
        self._launch()
        try:
            self._done.wait()
        except BaseException:  # Ctrl-C: ask the platform to stop too
            self._job.request_cancel()
            raise
        return self.result()

    def start(self) -> Task[T]:
        """Run in a background thread (``wait=False``)."""
        self._launch()
        return self

    # the caller's side -----------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def committed(self) -> bool:
        """Whether the work passed its point of no return (``Job.commit``): it is no longer
        stopped by cancel or the deadline, and ends with its own outcome."""
        return self._job.committed

    @property
    def error(self) -> BaseException | None:
        return self._error

    def result(self) -> T:
        """The result of a finished task; re-raises its error."""
        if not self.done:
            raise InvalidState(f"task {self.name!r} is still {self.state}")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def wait(self, timeout: float | None = DEFAULT_TIMEOUT) -> T:
        """Block until the task ends (at most ``timeout`` seconds) and return its result."""
        if not self._done.wait(timeout):
            raise Timeout(f"task {self.name!r} still {self.state} after {timeout:g} s")
        return self.result()

    def cancel(self) -> None:
        """Ask the task to stop; the platform's own cancel runs where it has one."""
        if self.done:
            return
        if not self.cancellable:
            raise NotSupported(self.backend or "this backend", Capability.TASK_CANCEL,
                               f"task {self.name!r} cannot be cancelled")
        if not self._job.request_cancel():
            log.info("task %r is past its point of no return (%s): it runs to its end",
                     self.name, self._job._control.committed)


def run(
    name: str,
    work: Callable[[Job], T],
    *,
    wait: bool,
    timeout: float | None,
    on_progress: ProgressCallback | None = None,
    cancellable: bool = True,
    backend: str = "",
) -> T | Task[T]:
    """Run ``work`` as a task: inline when ``wait``, else in the background."""
    task = Task(name, work, timeout=timeout, on_progress=on_progress, cancellable=cancellable,
                backend=backend)
    if wait:
        return task.run_here()
    return task.start()


__all__ = ["DEFAULT_TIMEOUT", "AnyvirtError", "Job", "Task", "TaskState", "run"]
