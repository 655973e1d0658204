"""Power actions with anyvirt's normalised meanings, and CPU/memory changes.

``STOP`` presses the ACPI power button and waits for the guest to power
off (pressing again every few seconds: a guest still booting may miss the
first press); ``POWER_OFF`` is ``destroy``; ``SUSPEND`` is a managed save,
from which ``START`` restores.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import libvirt

from anyvirt.errors import InvalidSpec
from anyvirt.model import PowerAction, PowerState
from anyvirt.tasks import Job
from anyvirt_libvirt.states import domain_state

#: seconds between ACPI power-button presses while waiting for a graceful stop
REPRESS_INTERVAL = 5.0


def _wait_state(dom: libvirt.virDomain, want: set[PowerState], job: Job, what: str) -> None:
    job.wait_for(lambda: domain_state(dom)[0] in want, what, interval=0.1, max_interval=0.5)


def _shutdown(dom: libvirt.virDomain) -> None:
    try:
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (
            libvirt.VIR_ERR_NO_SUPPORT,
            libvirt.VIR_ERR_INVALID_ARG,
            libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        ):
            raise
        dom.shutdown()  # drivers without a choice of method (test:///)


def graceful_stop(dom: libvirt.virDomain, job: Job) -> None:
    _shutdown(dom)
    pressed = time.monotonic()
    delay = 0.1

    def off() -> bool:
        nonlocal pressed
        if domain_state(dom)[0] is PowerState.STOPPED:
            return True
        if time.monotonic() - pressed > REPRESS_INTERVAL:
            try:
                _shutdown(dom)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise  # "domain is not running": it just went off
            pressed = time.monotonic()
        return False

    job.wait_for(off, f"{dom.name()} to shut down (ACPI)", interval=delay, max_interval=0.5)


def power(dom: libvirt.virDomain, action: PowerAction, job: Job) -> None:
    """Carry out ``action`` and return once the domain is in the resulting state."""
    name = dom.name()
    if action is PowerAction.START:
        dom.create()  # restores a managed save when there is one
        _wait_state(dom, {PowerState.RUNNING}, job, f"{name} to start")
    elif action is PowerAction.STOP:
        graceful_stop(dom, job)
    elif action is PowerAction.POWER_OFF:
        _power_off(dom, job)
    elif action is PowerAction.REBOOT:
        dom.reboot(0)
    elif action is PowerAction.RESET:
        dom.reset(0)
    elif action is PowerAction.PAUSE:
        dom.suspend()
        _wait_state(dom, {PowerState.PAUSED}, job, f"{name} to pause")
    elif action is PowerAction.RESUME:
        dom.resume()
        _wait_state(dom, {PowerState.RUNNING}, job, f"{name} to resume")
    elif action is PowerAction.SUSPEND:
        dom.managedSave(0)
        _wait_state(dom, {PowerState.SUSPENDED}, job, f"{name} to suspend")


def _power_off(dom: libvirt.virDomain, job: Job) -> None:
    if domain_state(dom)[0] is PowerState.SUSPENDED:
        dom.managedSaveRemove(0)  # "off" for a suspended VM: forget the saved memory
        return
    dom.destroy()
    _wait_state(dom, {PowerState.STOPPED}, job, f"{dom.name()} to power off")


def reconfigure(dom: libvirt.virDomain, cpus: int | None, memory_mib: int | None) -> bool:
    """Apply to the persistent config, and live too where libvirt allows; True if live.

    vCPUs change live within the domain's maximum; memory does not (QEMU grows a
    guest only through memory hotplug, which anyvirt's domains do not set up)."""
    running = bool(dom.isActive())
    config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    live_ok = running
    if cpus is not None:
        if cpus < 1:
            raise InvalidSpec("cpus must be at least 1")
        maximum = dom.vcpusFlags(config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        if cpus > maximum:
            dom.setVcpusFlags(cpus, config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        dom.setVcpusFlags(cpus, config)
        if running:
            live_ok = _try_live(lambda: dom.setVcpusFlags(cpus, libvirt.VIR_DOMAIN_AFFECT_LIVE))
    if memory_mib is not None:
        kib = memory_mib * 1024
        # the maximum too, down as well as up: it is the size a VM is listed with, and a
        # smaller current size under an old maximum would leave ``vm.memory_mib`` unchanged
        dom.setMemoryFlags(kib, config | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
        dom.setMemoryFlags(kib, config)
        if running:
            # without memory hotplug a running guest keeps its size; ballooning it down
            # now would shrink what it may use, not the VM, and ``vm.memory_mib`` (the
            # maximum) would not move: the new size is for the next start
            live_ok = live_ok and kib == dom.maxMemory()
    return live_ok


def _try_live(change: Callable[[], object]) -> bool:
    """A live change libvirt refuses (beyond the maximum, no hotplug) stays config-only."""
    try:
        change()
    except libvirt.libvirtError:
        return False
    return True
