"""libvirt domain states -> anyvirt's normalised PowerState (raw word kept)."""

from __future__ import annotations

import functools

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


def _reasons(prefix: str, skip: tuple[str, ...] = ()) -> dict[int, str]:
    """libvirt's reason codes of one state, as virsh spells them ("from snapshot")."""
    names: dict[int, str] = {}
    for attr in dir(libvirt):
        if attr.startswith(prefix) and attr.removeprefix(prefix) not in skip:
            names.setdefault(getattr(libvirt, attr), attr.removeprefix(prefix).lower().replace("_", " "))
    return names


#: per state, reason code -> words ("paused (migration)", "shutoff (destroyed)", ...)
_REASONS: dict[int, dict[int, str]] = {
    libvirt.VIR_DOMAIN_RUNNING: _reasons("VIR_DOMAIN_RUNNING_"),
    libvirt.VIR_DOMAIN_PAUSED: _reasons("VIR_DOMAIN_PAUSED_"),
    libvirt.VIR_DOMAIN_SHUTOFF: _reasons("VIR_DOMAIN_SHUTOFF_"),
    libvirt.VIR_DOMAIN_CRASHED: _reasons("VIR_DOMAIN_CRASHED_"),
    # VIR_DOMAIN_SHUTDOWN_* also names shutdown *methods*: only 0 and 1 are reasons
    libvirt.VIR_DOMAIN_SHUTDOWN: {0: "unknown", 1: "user"},
    libvirt.VIR_DOMAIN_PMSUSPENDED: {0: "unknown"},
}


def normalise(state: int, managed_save: bool, reason: int | None = None) -> tuple[PowerState, str]:
    """(PowerState, raw) for a libvirt state and reason; a shut-off domain with a managed
    save is SUSPENDED. The raw word keeps libvirt's reason unless it is "unknown"."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF and managed_save:
        return PowerState.SUSPENDED, MANAGED_SAVE_RAW
    return _STATE.get(state, PowerState.UNKNOWN), _raw_word(state, reason)


@functools.cache
def _raw_word(state: int, reason: int | None) -> str:
    """"paused (user)": cached, as the listing asks it for every domain."""
    raw = _RAW.get(state, f"state {state}")
    why = _REASONS.get(state, {}).get(reason) if reason is not None else None
    return f"{raw} ({why})" if why and why != "unknown" else raw


def domain_state(dom: libvirt.virDomain) -> tuple[PowerState, str]:
    """The normalised state of one domain (one or two calls)."""
    state, reason = dom.state(0)
    saved = False
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        try:
            saved = bool(dom.hasManagedSaveImage(0))
        except libvirt.libvirtError:
            saved = False
    return normalise(state, saved, reason)
