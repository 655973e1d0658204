"""A small pool that works a few items ahead, for the repository's chunk loops."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

WORKERS = 2  # hashing, zstd and pwrite release the GIL: one thread per core here
WINDOW = 8  # chunks in flight at once (memory: WINDOW x the chunk size)
T = TypeVar("T")
R = TypeVar("R")


def pipeline(items: Iterable[T], load: Callable[[T], R | None],
             finish: Callable[[T, R | None], Any]) -> Iterator[tuple[T, Any]]:
    """``load`` each item in this thread (reads: they release the GIL), ``finish`` it in a
    pool, and yield ``(item, result)`` in order with at most WINDOW items in flight."""
    pending: collections.deque[tuple[T, Future[Any]]] = collections.deque()
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="anyvirt-repo") as pool:
        try:
            for item in items:
                data = load(item)
                pending.append((item, pool.submit(finish, item, data)))
                while len(pending) >= WINDOW:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()


__all__ = ["WINDOW", "WORKERS", "pipeline"]
