"""A small record of the volumes being made, so a daemon that dies mid-create leaves
nothing behind for long.

A create, clone or migration makes volumes before it defines the domain that
owns them. If the daemon dies in between, the clean-up after the failure
cannot reach it either, and the volumes (a partial upload, a half copy) would
stay in the pool with nothing referring to them. So each volume is noted here
(pool and volume name, and the process making it) before it is made, and the
note is dropped once the domain owning it is defined or the volume removed.
The next connection to the same host (a reconnect, or another process later)
removes what such notes name when their maker is gone, or gave up on them,
and no domain uses the volume.

The record is a JSON file per libvirt host (its host UUID) in the user's cache
directory, changed under an exclusive ``flock``: another client machine's
in-flight volumes are not its business, and a pool is never scanned for
volumes that merely look unused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import platformdirs

from anyvirt.kit.processes import process_runs

log = logging.getLogger(__name__)



class InflightRecord:
    """The in-flight volumes of one libvirt host, as this machine knows them."""

    def __init__(self, host_id: str, directory: Path | None = None) -> None:
        base = directory or Path(platformdirs.user_cache_dir("anyvirt")) / "libvirt-inflight"
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in host_id) or "host"
        self.path = base / f"{safe}.json"

    @contextlib.contextmanager
    def _entries(self) -> Iterator[list[dict[str, Any]]]:
        """The entries, under the file's lock; changes to the list are written back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # read-write without O_APPEND (a+ would append every write): see below
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        with os.fdopen(descriptor, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read()
            try:
                entries: list[dict[str, Any]] = json.loads(text) if text.strip() else []
                text = json.dumps(entries)  # to compare with, once the caller is done
            except ValueError:
                entries = []  # a torn write: forget it rather than fail every create
            yield entries
            if json.dumps(entries) != text:
                # written over, then cut to length: never truncated to zero first, which
                # ext4 (auto_da_alloc) answers with a synchronous flush at close, 1-4 ms
                # per change and three changes per clone
                handle.seek(0)
                handle.write(json.dumps(entries))
                handle.truncate()
                handle.flush()

    def note(self, pool: str, volume: str) -> None:
        with self._entries() as entries:
            entries.append({"pool": pool, "volume": volume, "pid": os.getpid()})

    def done(self, pool: str, *volumes: str) -> None:
        """The volumes are owned by a domain now, or gone: forget them."""
        with self._entries() as entries:
            entries[:] = [e for e in entries if e["pool"] != pool or e["volume"] not in volumes]

    def abandon(self, pool: str, volume: str) -> None:
        """The clean-up could not remove it (the daemon was unreachable): the next
        connection does."""
        with self._entries() as entries:
            for entry in entries:
                if (entry["pool"], entry["volume"]) == (pool, volume):
                    entry["abandoned"] = True

    def pending(self) -> list[tuple[str, str]]:
        """Volumes whose maker is gone or gave up on them."""
        if not self.path.exists():
            return []  # nothing was ever made through this machine: no file to leave
        with self._entries() as entries:
            return [
                (e["pool"], e["volume"]) for e in entries
                if e.get("abandoned") or not process_runs(int(e.get("pid", 0)))
            ]

    def sweep(self, remove: Callable[[str, str], bool]) -> list[tuple[str, str]]:
        """Call ``remove(pool, volume)`` for each pending volume (True: it is gone or
        in use by a domain now, forget it). Returns the volumes forgotten."""
        forgotten = []
        for pool, volume in self.pending():
            try:
                finished = remove(pool, volume)
            except Exception:  # the connection may be down again: try next time
                log.debug("in-flight volume %s/%s not cleaned yet", pool, volume, exc_info=True)
                continue
            if finished:
                self.done(pool, volume)
                forgotten.append((pool, volume))
        return forgotten
