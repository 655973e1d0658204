"""What this process knows about files it serves, by path, while it serves them.

A raw view anyvirt made (:mod:`anyvirt.kit.raw_view`) is a plain file to whoever reads
it, but the code that made it knows more: which NBD exports it shows (so qemu-img may
read those directly), where its data sits in its layers (so an encoder may read there,
past the decoder), whether a move wants a digest of what is read from it. Each such
fact is a :class:`ViewRecord`: entries recorded by path for as long as a block lasts,
in this process only. The facts come from the code that made the file, never from an
image, an archive or a user: a path nobody recorded is just a file.

Paths are resolved (:func:`resolved`) when recorded and when looked up, so two
spellings of one file find the same entry. A lookup from inside a read of a FUSE view
must not touch the file system (a ``stat`` of the view waits for the very read it is
serving): such callers resolve the path beforehand and use :meth:`ViewRecord.at`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


def resolved(path: str | os.PathLike[str]) -> str:
    """``path`` as records key it: absolute, symbolic links resolved."""
    return os.path.realpath(path)


class ViewRecord(Generic[T]):
    """One fact about served files, by path."""

    def __init__(self) -> None:
        self._entries: dict[str, T] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def recorded(self, entries: Mapping[str, T]) -> Iterator[dict[str, T]]:
        """Record ``entries`` (path -> fact) while the block lasts; yields the ones
        recorded, by the caller's path. A path recorded already keeps its fact (another
        caller's, until its block ends) and is left out of what is yielded."""
        # resolved before the lock: resolving may stat a view, whose server may be
        # looking a fact up right now
        wanted = {resolved(path): (path, fact) for path, fact in entries.items()}
        with self._lock:
            keys = [key for key in wanted if key not in self._entries]
            self._entries.update((key, wanted[key][1]) for key in keys)
        mine = dict(wanted[key] for key in keys)
        try:
            yield mine
        finally:
            with self._lock:
                for key in keys:
                    self._entries.pop(key, None)

    @contextlib.contextmanager
    def recorded_one(self, path: str | os.PathLike[str], fact: T) -> Iterator[None]:
        """Record one fact while the block lasts; a path recorded already is an error (two
        makers of one file: a bug)."""
        with self.recorded({os.fspath(path): fact}) as mine:
            if not mine:
                raise ValueError(f"{os.fspath(path)} is recorded already")
            yield

    def get(self, path: str | os.PathLike[str]) -> T | None:
        """The fact recorded for ``path``, if any."""
        return self.at(resolved(path))

    def at(self, key: str) -> T | None:
        """:meth:`get` for a path already :func:`resolved`: touches no file system."""
        with self._lock:
            return self._entries.get(key)


__all__ = ["ViewRecord", "resolved"]
