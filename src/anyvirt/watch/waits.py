"""Waits built on the watch: they sleep until the platform says something changed.

Where the platform pushes changes (libvirt events, vSphere's long poll, the
memory backend) a wait sends nothing while it waits; where it does not
(Proxmox, VirtualBox) the watch's poll is the only traffic, one listing per
interval, never a loop of its own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from anyvirt.errors import NotFound, Timeout
from anyvirt.model import PowerState, VMSummary
from anyvirt.watch.stream import Watch

if TYPE_CHECKING:
    from anyvirt.vm import VM


def wait_for_state(
    vm: VM, state: PowerState, timeout: float, *, interval: float | None = None
) -> VMSummary:
    """Block until ``vm`` is in ``state``; return its summary then.

    ``Timeout`` when ``timeout`` seconds pass first (naming the state it was in),
    ``NotFound`` when the VM is removed while waited on.
    """
    if not isinstance(state, PowerState):
        state = PowerState(state)
    deadline = time.monotonic() + timeout
    with Watch(vm.host, interval=interval, timeout=max(timeout, 1.0)) as watch:
        last = watch.summary(vm.id)
        if last is None:
            raise NotFound(f"no VM with id {vm.id!r} on {vm.host.uri}")
        while last.state is not state:
            remaining = deadline - time.monotonic()
            change = watch.get(timeout=max(remaining, 0.0)) if remaining > 0 else None
            if change is None:
                raise Timeout(f"VM {vm.name!r} did not become {state} within {timeout:g} s "
                              f"(it is {last.state})")
            if change.vm_id != vm.id:
                continue
            if change.new is None:
                raise NotFound(f"VM {vm.name!r} was removed while waiting for it to become {state}")
            last = change.new
        return last
