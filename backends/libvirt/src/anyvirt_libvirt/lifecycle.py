"""Power actions with anyvirt's normalised meanings, and CPU/memory changes.

``STOP`` presses the ACPI power button and waits for the guest to power
off (pressing again every few seconds: a guest still booting may miss the
first press); ``POWER_OFF`` is ``destroy``; ``SUSPEND`` is a managed save,
from which ``START`` restores.
"""

from __future__ import annotations

import time

import libvirt

from anyvirt.errors import InvalidState
from anyvirt.model import PowerAction, PowerState
from anyvirt.tasks import Job
from anyvirt_libvirt.domxml import HostChoices, memory_room_mib, vcpu_room
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
    transient = not dom.isPersistent()
    _shutdown(dom)
    pressed = time.monotonic()
    delay = 0.1

    def off() -> bool:
        nonlocal pressed
        try:
            if domain_state(dom)[0] is PowerState.STOPPED:
                return True
        except libvirt.libvirtError as exc:
            if transient and exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return True  # a transient domain is gone once it is off
            raise
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
    transient = not dom.isPersistent()
    dom.destroy()
    if transient:
        return  # a transient domain is gone once off: nothing left to wait for
    _wait_state(dom, {PowerState.STOPPED}, job, f"{dom.name()} to power off")


def reconfigure(
    dom: libvirt.virDomain,
    cpus: int | None,
    memory_mib: int | None,
    host: HostChoices,
    live_capable: bool = True,
) -> bool:
    """Change vCPUs and/or memory; True if the running VM has them now.

    A running VM changes live within the room its definition leaves (vCPUs up to
    ``<vcpu>``'s maximum by hot-plug, memory up to ``<memory>`` by the balloon);
    beyond it, ``InvalidState`` before anything changes. A stopped VM changes its
    definition, and the room is widened to what a new VM of that size gets
    (``domxml.vcpu_room``, ``domxml.memory_room_mib``).
    """
    config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive() and live_capable:
        _check_room(dom, cpus, memory_mib)
        both = config | libvirt.VIR_DOMAIN_AFFECT_LIVE
        try:
            # libvirt changes the definition only once the live change worked; vCPUs
            # first, as they are what may fail (the balloon takes any size in its room)
            if cpus is not None:
                dom.setVcpusFlags(cpus, both)
            if memory_mib is not None:
                dom.setMemoryFlags(memory_mib * 1024, both)
        except libvirt.libvirtError as exc:
            # e.g. vCPU hot-unplug, which needs the machine's and the guest's help
            raise InvalidState(
                f"{dom.name()!r} cannot make this change while it runs "
                f"({exc.get_error_message()}): stop it, reconfigure, start it"
            ) from exc
        return True
    if cpus is not None:
        maximum = dom.vcpusFlags(config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        room = vcpu_room(cpus, host) if live_capable else cpus
        if room > maximum or cpus > maximum:
            dom.setVcpusFlags(max(room, cpus), config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        dom.setVcpusFlags(cpus, config)
    if memory_mib is not None:
        kib = memory_mib * 1024
        room = memory_room_mib(memory_mib, host) if live_capable else memory_mib
        # the maximum follows, down as well as up: room for the new size, no more
        dom.setMemoryFlags(room * 1024, config | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
        dom.setMemoryFlags(kib, config)
    return False


def _check_room(dom: libvirt.virDomain, cpus: int | None, memory_mib: int | None) -> None:
    name = dom.name()
    if cpus is not None:
        maximum = int(dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_VCPU_MAXIMUM))
        if cpus > maximum:
            raise InvalidState(
                f"{name!r} runs with room for {maximum} vCPU(s); {cpus} needs a restart: "
                "stop it, reconfigure, start it"
            )
    if memory_mib is not None:
        maximum_mib = int(dom.maxMemory()) // 1024
        if memory_mib > maximum_mib:
            raise InvalidState(
                f"{name!r} runs with room for {maximum_mib} MiB; {memory_mib} MiB needs a "
                "restart: stop it, reconfigure, start it"
            )
