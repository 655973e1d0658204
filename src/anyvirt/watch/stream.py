"""``host.vms.watch()``: a stream of typed VM changes over a driver's change source.

The watch keeps what it knows of every VM (id -> summary). Whatever the
source says (a full listing after a reconnect, one VM re-read after an event,
a VM gone) is compared with that, and only real differences become changes.
That one rule is what makes a reconnect lose and double nothing: the relist
after it yields exactly the differences between what the watch had and what
is there now, as Kubernetes' list+watch does.

Changes wait in a queue until the consumer takes them. Memory stays bounded
whatever the rate: past ``buffer`` waiting changes, a further change to a VM
that already has one waiting is merged into it (old from the first, new from
the last; an add then a remove cancel out), so the queue holds at most
``buffer`` changes plus one per VM.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from attrs import define

from anyvirt.errors import ConnectionFailed, Timeout
from anyvirt.model import VMSummary
from anyvirt.vm import VM
from anyvirt.watch.changes import VMChange, changed_fields, diff

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.kit.changes import ChangeSource

#: changes kept one by one before changes to the same VM start to be merged
DEFAULT_BUFFER = 10_000
#: how long ``watch()`` waits for the source's first listing
DEFAULT_START_TIMEOUT = 120.0


@define
class _Pending:
    vm_id: str
    old: VMSummary | None
    new: VMSummary | None


@define
class WatchStats:
    """What a watch has been through (for tests, benches and the curious)."""

    #: full listings received (the first, then one per reconnect or poll)
    snapshots: int = 0
    #: connection losses the source reported (each followed by a relist)
    lost: int = 0
    #: changes merged into an earlier one of the same VM because the consumer lagged
    coalesced: int = 0
    #: changes handed to the consumer
    delivered: int = 0
    #: the most changes ever waiting at once
    peak_pending: int = 0


class Watch:
    """An iterator of :class:`~anyvirt.watch.VMChange`, and a context manager that closes it.

    Made by ``host.vms.watch()``; see there for the options.
    """

    def __init__(
        self,
        host: Host,
        *,
        initial: bool = False,
        interval: float | None = None,
        buffer: int = DEFAULT_BUFFER,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        if buffer < 1:
            raise ValueError("a watch's buffer holds at least one change")
        self._host = host
        self._initial = initial
        self.buffer = buffer
        self.stats = WatchStats()
        self._known: dict[str, VMSummary] = {}
        self._queue: deque[_Pending] = deque()
        self._latest: dict[str, _Pending] = {}
        self._cond = threading.Condition()
        self._started = False
        self._closed = False
        self._error: BaseException | None = None
        self._source: ChangeSource = host.driver.change_source(interval)
        self._source.start(self)
        self._await_start(timeout)

    def _await_start(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._started or self._error is not None, timeout)
            error, started = self._error, self._started
        if started:
            return
        self.close()
        if error is not None:
            raise error
        raise Timeout(f"watching {self._host.uri}: no first listing within {timeout:g} s")

    # ------------------------------------------------------------ facts
    @property
    def pushed(self) -> bool:
        """True where the platform pushes changes (no polling while nothing changes)."""
        return self._source.pushed

    @property
    def closed(self) -> bool:
        return self._closed

    def summary(self, vm_id: str) -> VMSummary | None:
        """The latest known summary of one VM (None if the watch knows no such VM)."""
        with self._cond:
            return self._known.get(vm_id)

    def current(self) -> list[VM]:
        """Every VM as the watch knows it now (including changes not yet taken)."""
        with self._cond:
            summaries = list(self._known.values())
        return [VM(self._host, s) for s in summaries]

    def pending(self) -> int:
        """Changes waiting for the consumer."""
        with self._cond:
            return len(self._queue)

    # ------------------------------------------------------------ the sink side
    def snapshot(self, vms: Sequence[VMSummary]) -> None:
        after = {vm.id: vm for vm in vms}
        with self._cond:
            if self._closed:
                return
            self.stats.snapshots += 1
            if not self._started:
                self._started = True
                if self._initial:
                    for vm in after.values():
                        self._emit(vm.id, None, vm)
            else:
                for old, new in diff(self._known, after):
                    ref = new if new is not None else old
                    assert ref is not None
                    self._emit(ref.id, old, new)
            self._known = after
            self._cond.notify_all()

    def upsert(self, vm: VMSummary) -> None:
        with self._cond:
            if self._closed or not self._started:
                return  # before the first listing: that listing will hold it
            old = self._known.get(vm.id)
            self._known[vm.id] = vm
            if old is None or changed_fields(old, vm):
                self._emit(vm.id, old, vm)
                self._cond.notify_all()

    def remove(self, vm_id: str) -> None:
        with self._cond:
            if self._closed or not self._started:
                return
            old = self._known.pop(vm_id, None)
            if old is not None:
                self._emit(vm_id, old, None)
                self._cond.notify_all()

    def lost(self, error: BaseException) -> None:
        with self._cond:
            self.stats.lost += 1
            if not self._started and self._error is None:
                self._error = error  # the first listing failed: watch() raises it
            self._cond.notify_all()

    def failed(self, error: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    def _emit(self, vm_id: str, old: VMSummary | None, new: VMSummary | None) -> None:
        """Queue a change (lock held), merging it into the VM's waiting one when full."""
        waiting = self._latest.get(vm_id)
        if waiting is not None and len(self._queue) >= self.buffer:
            waiting.new = new  # keeps the first old: the consumer sees where it went from
            self.stats.coalesced += 1
            return
        entry = _Pending(vm_id, old, new)
        self._queue.append(entry)
        self._latest[vm_id] = entry
        self.stats.peak_pending = max(self.stats.peak_pending, len(self._queue))

    # ------------------------------------------------------------ the consumer side
    def _take(self) -> VMChange | None:
        """The next real change waiting (lock held), or None."""
        while self._queue:
            entry = self._queue.popleft()
            if self._latest.get(entry.vm_id) is entry:
                del self._latest[entry.vm_id]
            change = self._change(entry)
            if change is not None:
                self.stats.delivered += 1
                return change
        return None

    def _change(self, entry: _Pending) -> VMChange | None:
        old, new = entry.old, entry.new
        if old is None and new is None:
            return None  # added and removed while the consumer lagged
        if old is None:
            assert new is not None
            return VMChange("added", VM(self._host, new), None, new)
        if new is None:
            return VMChange("removed", VM(self._host, old), old, None)
        fields = changed_fields(old, new)
        if not fields:
            return None  # merged changes that ended where they began
        return VMChange("changed", VM(self._host, new), old, new, fields)

    def get(self, timeout: float | None = None) -> VMChange | None:
        """The next change, waiting up to ``timeout`` seconds (None: for ever); None
        when the time is up or the watch is closed. Raises the source's error if it
        gave up (after the changes that came before it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                change = self._take()
                if change is not None:
                    return change
                if self._closed:
                    return None
                if self._error is not None:
                    error = self._error
                    if not isinstance(error, Exception):
                        raise ConnectionFailed(f"watching {self._host.uri} stopped") from error
                    raise error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def __iter__(self) -> Iterator[VMChange]:
        return self

    def __next__(self) -> VMChange:
        change = self.get()
        if change is None:
            raise StopIteration
        return change

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop the source's threads and requests, and end the iteration (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._latest.clear()
            self._cond.notify_all()
        self._source.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Watch {self._host.uri} {len(self._known)} VMs {'closed' if self._closed else 'open'}>"
