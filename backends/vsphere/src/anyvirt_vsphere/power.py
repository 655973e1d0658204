"""Lifecycle verbs with anyvirt's normalised meanings.

``STOP`` and ``REBOOT`` are the guest's own shutdown and restart, which on
vSphere go through VMware Tools (``ShutdownGuest``/``RebootGuest``). Without
running Tools vSphere cannot ask the guest anything, so instead of silently
powering off we raise ``InvalidState`` and name the way out
(``stop(force=True)`` is a power-off). ``RESET`` is a hard reset, ``SUSPEND``
suspends to disk and ``START`` resumes a suspended VM; vSphere has no pause.
"""

from __future__ import annotations

from anyvirt.errors import InvalidState
from anyvirt.model import PowerAction
from anyvirt.tasks import Job
from anyvirt_vsphere.inventory import Inventory
from anyvirt_vsphere.tasks import run_task

TOOLS_RUNNING = "guestToolsRunning"


def power(inventory: Inventory, vm_id: str, action: PowerAction, job: Job) -> None:
    ref = inventory.vm_ref(vm_id)
    collector = inventory.collector
    what = f"{action.value} of VM {vm_id}"
    if action in (PowerAction.START, PowerAction.RESUME):
        run_task(collector, lambda: ref.PowerOnVM_Task(None), job, what)
    elif action is PowerAction.POWER_OFF:
        run_task(collector, ref.PowerOffVM_Task, job, what)
    elif action is PowerAction.RESET:
        run_task(collector, ref.ResetVM_Task, job, what)
    elif action is PowerAction.SUSPEND:
        run_task(collector, ref.SuspendVM_Task, job, what)
    elif action is PowerAction.STOP:
        _require_tools(inventory, vm_id, "a graceful stop", "stop(force=True) powers it off")
        inventory.session.call(ref.ShutdownGuest, what, read=False)
        job.wait_for(
            lambda: (
                inventory.vm_props(vm_id, ("runtime.powerState",)).get("runtime.powerState") == "poweredOff"
            ),
            f"VM {vm_id} to shut down",
        )
    else:  # PAUSE is not declared (vSphere has none): the gate refuses it before this
        assert action is PowerAction.REBOOT, f"{action} reached the vSphere driver"
        _require_tools(inventory, vm_id, "a guest reboot", "reset() restarts it the hard way")
        inventory.session.call(ref.RebootGuest, what, read=False)


def _require_tools(inventory: Inventory, vm_id: str, what: str, alternative: str) -> None:
    props = inventory.vm_props(vm_id, ("guest.toolsRunningStatus",))
    status = props.get("guest.toolsRunningStatus")
    if status != TOOLS_RUNNING:
        raise InvalidState(
            f"{what} of VM {vm_id} needs VMware Tools running in the guest "
            f"(tools status: {status or 'not installed'}); {alternative}"
        )
