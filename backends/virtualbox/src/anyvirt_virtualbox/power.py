"""Lifecycle verbs as VBoxManage commands, with anyvirt's meanings.

``stop`` presses the ACPI power button and waits (within the job's deadline)
for the guest to power off; ``stop(force=True)`` pulls the plug (``controlvm
poweroff``, or ``discardstate`` for a VM whose saved state is all that is left
of it). ``suspend`` is ``savestate``; ``start`` is a headless ``startvm`` and
also restores a saved VM. The core has checked the state rules already.
"""

from __future__ import annotations

from anyvirt.errors import AnyvirtError, InvalidState, Timeout
from anyvirt.model import PowerAction
from anyvirt.tasks import Job
from anyvirt_virtualbox import machines
from anyvirt_virtualbox.runner import VBoxManage

_CONTROL = {
    PowerAction.RESET: "reset",
    PowerAction.PAUSE: "pause",
    PowerAction.RESUME: "resume",
    PowerAction.SUSPEND: "savestate",
}
_OFF = ("poweroff", "aborted", "saved", "aborted-saved", "teleported")
NO_KERNEL_DRIVER = (
    "this VirtualBox host has no kernel driver (vboxdrv is not loaded; VBoxManage says so on "
    "every call), so no VM can run here"
)


def raw_state(vbox: VBoxManage, vm_id: str) -> str:
    return machines.show(vbox, vm_id).get("VMState", "unknown")


def power(vbox: VBoxManage, vm_id: str, action: PowerAction, job: Job) -> None:
    what = f"{action.value} VM {vm_id}"
    timeout = job.remaining(300.0)
    if action is PowerAction.START:
        try:
            vbox.run(["startvm", vm_id, "--type", "headless"], what, timeout=timeout)
        except AnyvirtError as exc:
            if "terminated unexpectedly during startup" in str(exc):
                raise InvalidState(f"{what}: {NO_KERNEL_DRIVER}" if _no_driver(vbox) else str(exc)) from exc
            raise
        return
    if action is PowerAction.STOP:
        vbox.run(["controlvm", vm_id, "acpipowerbutton"], what, timeout=timeout)
        try:
            job.wait_for(lambda: raw_state(vbox, vm_id) in _OFF, f"VM {vm_id} to power off", interval=0.3)
        except Timeout as exc:
            raise Timeout(
                f"{exc}: the guest did not act on the ACPI power button; stop(force=True) powers it off"
            ) from exc
        return
    if action is PowerAction.POWER_OFF:
        state = raw_state(vbox, vm_id)
        if state in ("saved", "aborted-saved"):
            vbox.run(["discardstate", vm_id], what, timeout=timeout)
        elif state != "aborted":
            vbox.run(["controlvm", vm_id, "poweroff"], what, timeout=timeout)
        return
    # the rest: reboot is not declared (it needs Guest Additions), so the gate sends none
    vbox.run(["controlvm", vm_id, _CONTROL[action]], what, timeout=timeout)


def _no_driver(vbox: VBoxManage) -> bool:
    return bool(vbox.run(["--version"], "checking the kernel driver").driver_warning)
