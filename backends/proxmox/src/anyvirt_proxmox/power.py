"""Lifecycle verbs as PVE status actions, with anyvirt's normalised meanings.

``stop()`` is ``shutdown`` (ACPI) with the caller's timeout; ``stop(force=True)`` is
``stop``. Pause is ``suspend`` and resume ``resume``; suspend is ``suspend``
with ``todisk=1`` (hibernation to a state volume) and ``start`` resumes it.
The task ending is not the end: an HA-managed VM's action is a request to
the HA manager, which acts later, so each verb waits until the VM is in the
state it leads to.
"""

from __future__ import annotations

from typing import Any

from anyvirt.errors import TaskFailed, Timeout
from anyvirt.model import PowerAction, PowerState
from anyvirt.tasks import Job
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.tasks import run_task

ACTIONS: dict[PowerAction, tuple[str, dict[str, Any]]] = {
    PowerAction.START: ("start", {}),
    PowerAction.STOP: ("shutdown", {}),
    PowerAction.POWER_OFF: ("stop", {}),
    PowerAction.REBOOT: ("reboot", {}),
    PowerAction.RESET: ("reset", {}),
    PowerAction.PAUSE: ("suspend", {}),
    PowerAction.RESUME: ("resume", {}),
    PowerAction.SUSPEND: ("suspend", {"todisk": 1}),
}
DEFAULT_SHUTDOWN_SECONDS = 60
#: the state each verb leads to; the verb is over when the VM is seen in it
LEADS_TO: dict[PowerAction, PowerState] = {
    PowerAction.START: PowerState.RUNNING, PowerAction.STOP: PowerState.STOPPED,
    PowerAction.POWER_OFF: PowerState.STOPPED, PowerAction.REBOOT: PowerState.RUNNING,
    PowerAction.RESET: PowerState.RUNNING, PowerAction.PAUSE: PowerState.PAUSED,
    PowerAction.RESUME: PowerState.RUNNING, PowerAction.SUSPEND: PowerState.SUSPENDED,
}


def power(inv: Inventory, vm_id: str, action: PowerAction, job: Job) -> None:
    verb, params = ACTIONS[action]
    params = dict(params)
    if action is PowerAction.STOP:
        left = job.remaining()
        params["timeout"] = max(1, int(left if left is not None else DEFAULT_SHUTDOWN_SECONDS))
    node = inv.node_of(vm_id)
    what = f"{verb} of VM {vm_id}"
    try:
        run_task(inv.session, "POST", ("nodes", node, "qemu", cfg.vmid(vm_id), "status", verb), job, what,
                 **params)
    except TaskFailed as exc:
        if action is PowerAction.STOP and "got timeout" in str(exc):
            raise Timeout(f"VM {vm_id} did not shut down within {params['timeout']} s (the guest may "
                          "ignore ACPI); stop(force=True) powers it off") from exc
        raise
    wanted = LEADS_TO[action]
    job.wait_for(lambda: inv.vm_summary(vm_id).state is wanted, f"VM {vm_id} to be {wanted}",
                 interval=0.05)
