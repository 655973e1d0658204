"""Test knobs of the ``memory://`` backend, kept apart from its reference primitives.

* ``?latency=SECONDS``: every change takes that long, in small steps that report
  progress and honour cancel and the deadline, so ``wait=False`` tasks, progress
  bars and ``cancel()`` can be exercised;
* ``?without=snapshot,migration.live``: a connection lacking those capabilities,
  to rehearse code against a backend that cannot do something;
* :func:`inject_failure`: the next call of a driver method fails with the given
  error, after the gate's checks, to test callers' cleanup paths.
"""

from __future__ import annotations

import threading

from anyvirt.errors import InvalidSpec
from anyvirt.model import Capability
from anyvirt.tasks import Job

STEPS = 5
MAX_LATENCY_S = 3600.0


class Knobs:
    """One memory host's simulated latency and pending injected failures."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self._failures: dict[str, Exception] = {}
        self._lock = threading.Lock()

    def fail_next(self, method: str, error: Exception) -> None:
        with self._lock:
            self._failures[method] = error

    def simulate(self, job: Job, method: str, what: str) -> None:
        """The time a platform takes, in steps; then any failure injected for ``method``."""
        job.check()
        for step in range(STEPS):
            if self.latency:
                job.sleep(self.latency / STEPS)
            job.progress(100.0 * (step + 1) / STEPS, what)
        with self._lock:
            failure = self._failures.pop(method, None)
        if failure is not None:
            raise failure


def parse_without(spec: str) -> frozenset[Capability]:
    """``without=snapshot,migration.live`` -> those capabilities."""
    out = set()
    for word in filter(None, (w.strip() for w in spec.split(","))):
        try:
            out.add(Capability(word))
        except ValueError:
            known = ", ".join(c.value for c in Capability)
            raise InvalidSpec(f"memory:// option without: unknown capability {word!r} ({known})") from None
    return frozenset(out)


def inject_failure(name: str, method: str, error: Exception) -> None:
    """Make the next call of driver ``method`` (e.g. ``"create_vm"``) on memory host
    ``name`` raise ``error`` after the gate's checks, so callers' cleanup paths can be
    tested."""
    from anyvirt.memory import world

    world(name, {}).knobs.fail_next(method, error)
