"""Whether a process still runs: the one test for leases and in-flight records left by
a process that may have died (a backup's lease, a create's volume record)."""

from __future__ import annotations

import os


def process_runs(pid: int) -> bool:
    """True while ``pid`` exists on this machine (a process of another user counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["process_runs"]
