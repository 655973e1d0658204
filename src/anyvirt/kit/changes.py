"""Change sources: how a driver tells the core that its VMs changed.

A backend hands out one :class:`ChangeSource` per watch
(``Driver.change_source``). The source speaks in three plain messages to a
:class:`ChangeSink`, and the core (:mod:`anyvirt.watch`) turns them into typed
changes:

- ``snapshot(vms)``: every VM as it is now. The first message of a source, and
  the one it sends again after a lost connection (the relist of Kubernetes'
  list+watch): the core emits exactly the differences from what it had.
- ``upsert(vm)``: one VM as it is now (new or changed); the core compares it
  with what it had, so a source may send a VM that did not really change.
- ``remove(vm_id)``: one VM is gone.

``lost(error)`` says the connection dropped and a relist will follow;
``failed(error)`` that the source gave up (the watch raises it).

The default source, :class:`PollingSource`, lists every ``interval`` seconds:
the one way for platforms that push nothing (Proxmox, VBoxManage).
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from anyvirt.model import VMSummary

log = logging.getLogger("anyvirt.watch")

#: how long ``close()`` waits for a source's threads before leaving them to die alone
#: (daemon threads, every request they make is bounded by the connection's timeout)
CLOSE_GRACE = 5.0
#: waits between reconnect attempts: quick first (a restarted daemon is back within
#: a second), then no more than one attempt every few seconds
RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ChangeSink(Protocol):
    """What a source reports to (the core's watch)."""

    def snapshot(self, vms: Sequence[VMSummary]) -> None: ...

    def upsert(self, vm: VMSummary) -> None: ...

    def remove(self, vm_id: str) -> None: ...

    def lost(self, error: BaseException) -> None: ...

    def failed(self, error: BaseException) -> None: ...


class ChangeSource(abc.ABC):
    """One stream of VM changes from a platform, run in the source's own thread(s)."""

    #: True where the platform pushes changes (events, long polls): nothing is asked
    #: while nothing changes, and waits built on the watch never poll
    pushed: bool = False

    @abc.abstractmethod
    def start(self, sink: ChangeSink) -> None:
        """Begin delivering to ``sink``, a ``snapshot`` first; return at once."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every thread and every outstanding request now; idempotent."""


class ThreadedSource(ChangeSource):
    """A source whose work is one loop in one daemon thread, stopped by an event.

    Subclasses write :meth:`run` (return when ``self.stopping`` is set) and, when a
    request can be outstanding for long (a long poll), :meth:`interrupt` to end it.
    """

    name = "anyvirt-watch"

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink: ChangeSink | None = None

    def start(self, sink: ChangeSink) -> None:
        self._sink = sink
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        assert self._sink is not None
        try:
            self.run(self._sink)
        except BaseException as exc:  # handed to the consumer, never lost
            if not self.stopping.is_set():
                self._sink.failed(exc)

    @abc.abstractmethod
    def run(self, sink: ChangeSink) -> None:
        """The source's loop."""

    def interrupt(self) -> None:  # an optional hook
        """End an outstanding request (called from another thread by ``close``)."""

    def close(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        try:
            self.interrupt()
        except Exception:  # the source is going away anyway
            log.debug("interrupting %s", self.name, exc_info=True)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_GRACE)

    def reconnect_delay(self, attempt: int) -> float:
        return RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]


class PollingSource(ThreadedSource):
    """One listing every ``interval`` seconds, each handed over as a snapshot.

    The core diffs consecutive listings, so a poll costs what one listing costs
    (one request on Proxmox) and a change is seen within one interval. A failed
    poll is reported as ``lost`` and the next one is a relist like any other.
    """

    name = "anyvirt-watch-poll"

    def __init__(self, list_vms: Callable[[], list[VMSummary]], interval: float) -> None:
        super().__init__()
        if not interval > 0:
            raise ValueError(f"a polling interval must be positive, not {interval!r}")
        self.list_vms = list_vms
        self.interval = interval

    def run(self, sink: ChangeSink) -> None:
        next_poll = time.monotonic()
        while not self.stopping.is_set():
            # at a fixed rate: a slow listing must not stretch the interval (and the latency)
            next_poll += self.interval
            try:
                listing = self.list_vms()
            except Exception as exc:  # the next poll is the retry
                if self.stopping.is_set():
                    return
                sink.lost(exc)
            else:
                if self.stopping.is_set():
                    return
                sink.snapshot(listing)
            now = time.monotonic()
            if next_poll < now:  # a listing longer than the interval: a full interval's rest
                next_poll = now + self.interval
            self.stopping.wait(next_poll - now)
