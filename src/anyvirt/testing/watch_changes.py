"""Reading a :class:`~anyvirt.watch.Watch` in tests of ``host.vms.watch()``.

One home for the core's watch tests and every backend's (they import ``anyvirt.testing``
the same way), so each suite waits for and collects changes alike.
"""

from __future__ import annotations

import time

from anyvirt.watch import VMChange, Watch


def next_change(watch: Watch, timeout: float = 5.0) -> tuple[VMChange, float]:
    """The next change, which must arrive within ``timeout`` seconds, and how long it took."""
    started = time.monotonic()
    change = watch.get(timeout=timeout)
    assert change is not None, "no change arrived"
    return change, time.monotonic() - started


def drain(watch: Watch, timeout: float = 1.0) -> list[VMChange]:
    """Every change until none arrives for ``timeout`` seconds (an empty list if none does)."""
    out = []
    while (change := watch.get(timeout=timeout)) is not None:
        out.append(change)
    return out
