"""Test knobs of the ``memory://`` backend, for tests to configure.

The backend owns them (:mod:`anyvirt.memory`: ``?latency=``, ``?without=``,
:func:`~anyvirt.memory.inject_failure`); this module only re-exports them for
tests written against its older home. It imports the backend, never the reverse.
"""

from __future__ import annotations

from anyvirt.memory import STEPS, Knobs, inject_failure, parse_without

MAX_LATENCY_S = 3600.0

__all__ = ["MAX_LATENCY_S", "STEPS", "Knobs", "inject_failure", "parse_without"]
