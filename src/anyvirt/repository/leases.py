"""Leases: who is writing to a repository now, so prune never takes what a backup needs.

A backup holds a lease (``locks/<id>.json``) from before it looks at which
chunks exist until its restore point is written. Prune holds the ``prune``
lease. Each side writes its own lease first and looks for the other's second,
so at least one of two that start together sees the other: a backup that sees
a prune waits for it; a prune that sees a backup removes points but no chunks
(the backup may be counting on any of them).

A lease is alive while its writer is: on this machine, while its process
runs (and, for this process, while the backup that took it runs); elsewhere,
while it was refreshed within :data:`TTL`. A backup refreshes its lease as it
goes. A dead lease, and every temporary object carrying its id, is removed by
the next backup or prune.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from attrs import frozen

from anyvirt.errors import InvalidState, NotFound
from anyvirt.kit.processes import process_runs
from anyvirt.repository.store import Store

FOLDER = "locks"
TTL = 15 * 60.0  # a lease from another machine not refreshed for this long is dead
REFRESH = 60.0
PRUNE = "prune"
_HOST = socket.gethostname()
_ours: set[str] = set()  # leases this process holds now
_ours_lock = threading.Lock()


@frozen
class Lease:
    id: str
    kind: str  # "backup" | "prune"
    host: str
    pid: int
    started: float
    refreshed: float

    def alive(self, now: float) -> bool:
        if self.host == _HOST:
            if self.pid == os.getpid():
                with _ours_lock:
                    return self.id in _ours
            return process_runs(self.pid)
        return now - self.refreshed < TTL



def new_id() -> str:
    return uuid.uuid4().hex[:16]


def _name(lease_id: str) -> str:
    return f"{FOLDER}/{lease_id}.json"


def _write(store: Store, lease: Lease) -> None:
    body = {"kind": lease.kind, "host": lease.host, "pid": lease.pid, "started": lease.started,
            "refreshed": lease.refreshed}
    store.put(_name(lease.id), json.dumps(body).encode(), lease.id)


#: how often a new lease is written again when its temporary name was taken away
_WRITE_TRIES = 5


def _write_new(store: Store, lease: Lease) -> None:
    """Write a lease that is not listed yet. Until its rename, the lease is a temporary
    name under ``locks/`` with no lease file of its own, so another writer's cleanup, run
    at that moment, takes it for a dead writer's leftover and removes it: the rename then
    finds nothing (NotFound). Writing it again is safe, and a cleanup that runs once the
    lease is listed leaves it alone."""
    for attempt in range(_WRITE_TRIES):
        try:
            _write(store, lease)
            return
        except NotFound:
            if attempt == _WRITE_TRIES - 1:
                raise


def read_all(store: Store) -> list[Lease]:
    out = []
    for name in store.files(FOLDER):
        base = name.rsplit("/", 1)[-1]
        if not base.endswith(".json"):
            continue
        try:
            body = json.loads(store.get(name))
            out.append(Lease(id=base[:-5], kind=str(body["kind"]), host=str(body["host"]),
                             pid=int(body["pid"]), started=float(body["started"]),
                             refreshed=float(body["refreshed"])))
        except NotFound:
            continue  # released while listed
        except (ValueError, KeyError, TypeError):
            # a lease is written atomically, so this is foreign or damaged: treat it as live
            # (a prune that skips chunk removal is safe; one that removes a needed chunk is not)
            out.append(Lease(id=base[:-5], kind="unknown", host="", pid=0, started=0.0,
                             refreshed=time.time()))
    return out


class Held:
    """A lease this process holds; :meth:`refresh` keeps it alive for other machines."""

    def __init__(self, store: Store, kind: str, lease_id: str | None = None) -> None:
        now = time.time()
        self.store = store
        self.lease = Lease(id=lease_id or new_id(), kind=kind, host=_HOST, pid=os.getpid(),
                           started=now, refreshed=now)
        self._last = now

    @property
    def id(self) -> str:
        return self.lease.id

    def refresh(self) -> None:
        now = time.time()
        if now - self._last >= REFRESH:
            self.lease = Lease(id=self.lease.id, kind=self.lease.kind, host=self.lease.host,
                               pid=self.lease.pid, started=self.lease.started, refreshed=now)
            _write(self.store, self.lease)
            self._last = now


@contextmanager
def hold(store: Store, kind: str, *, wait: float = 120.0) -> Iterator[Held]:
    """Hold a lease of ``kind`` for the block. A backup waits up to ``wait`` seconds for a
    running prune; a prune refuses to start beside another prune."""
    held = Held(store, kind)
    with _ours_lock:
        _ours.add(held.id)
    try:
        _write_new(store, held.lease)
        deadline = time.monotonic() + wait
        while True:
            others = [x for x in read_all(store) if x.id != held.id and x.alive(time.time())]
            if not any(x.kind == PRUNE for x in others):
                break
            if kind == PRUNE:
                raise InvalidState(f"another prune of {store.url} is running")
            if time.monotonic() > deadline:
                raise InvalidState(f"{store.url} is being pruned; try the backup again later")
            time.sleep(0.5)
        yield held
    finally:
        with _ours_lock:
            _ours.discard(held.id)
        # a lost connection cannot remove it: the lease then dies with this backup
        with contextlib.suppress(Exception):
            store.remove(_name(held.id))


def live_backups(store: Store, besides: str) -> list[Lease]:
    now = time.time()
    return [x for x in read_all(store) if x.id != besides and x.kind != PRUNE and x.alive(now)]


def dead(store: Store) -> tuple[set[str], list[str]]:
    """The ids of live leases, and the names of dead lease files."""
    now = time.time()
    live, gone = set(), []
    for lease in read_all(store):
        if lease.alive(now):
            live.add(lease.id)
        else:
            gone.append(_name(lease.id))
    return live, gone


__all__ = ["PRUNE", "Held", "Lease", "dead", "hold", "live_backups", "read_all"]
