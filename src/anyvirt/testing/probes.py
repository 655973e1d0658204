"""Probes the contract suite and the core's tests share."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anyvirt.host import Host


def cancel_a_running_task(host: Host) -> Any:
    """Cancel a gated task of ``host`` that is still running (``NotSupported`` where the
    connection cannot cancel); the task ends once asked, or once refused."""
    release = threading.Event()
    task = host.gate.extension("cancel probe", lambda job: release.wait(30), capability=None,
                               wait=False, timeout=60)
    try:
        task.cancel()
    finally:
        release.set()
    return task
