"""Where a new VM goes when the caller names no node: the core's rule, for backends.

The rule lives with the gate's other rules (:mod:`anyvirt.rules`): a node takes VMs
when it is online and not in maintenance, and the scheduler picks the one of those
with the least memory given out. Backends whose platform does not schedule call it
from here, so every backend places alike.
"""

from __future__ import annotations

from anyvirt.rules import least_loaded, takes_vms

__all__ = ["least_loaded", "takes_vms"]
