"""libvirt domain states -> anyvirt's normalised PowerState (raw word kept)."""

from __future__ import annotations

import libvirt

from anyvirt.model import PowerState

_RAW = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

_STATE = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    # "shutdown" = shutting down: still running until it reaches shutoff
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,
}

MANAGED_SAVE_RAW = "shutoff (managed save)"


def normalise(state: int, managed_save: bool) -> tuple[PowerState, str]:
    """(PowerState, raw) for a libvirt state; a shut-off domain with a managed save is SUSPENDED."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF and managed_save:
        return PowerState.SUSPENDED, MANAGED_SAVE_RAW
    return _STATE.get(state, PowerState.UNKNOWN), _RAW.get(state, f"state {state}")


def domain_state(dom: libvirt.virDomain) -> tuple[PowerState, str]:
    """The normalised state of one domain (one or two calls)."""
    state = dom.state(0)[0]
    saved = False
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        try:
            saved = bool(dom.hasManagedSaveImage(0))
        except libvirt.libvirtError:
            saved = False
    return normalise(state, saved)
