"""Which power states allow which action: one table for every backend.

Checked by the VM handle before the driver is called, so ``pause()`` on a
stopped VM is the same ``InvalidState`` everywhere, and nothing is sent.
"""

from __future__ import annotations

from anyvirt.errors import InvalidState
from anyvirt.model import PowerAction, PowerState

R, S, P, SU, C, U = (
    PowerState.RUNNING,
    PowerState.STOPPED,
    PowerState.PAUSED,
    PowerState.SUSPENDED,
    PowerState.CRASHED,
    PowerState.UNKNOWN,
)

ALLOWED_FROM: dict[PowerAction, frozenset[PowerState]] = {
    PowerAction.START: frozenset({S, SU, C}),
    PowerAction.STOP: frozenset({R}),
    PowerAction.POWER_OFF: frozenset({R, P, SU, C}),
    PowerAction.REBOOT: frozenset({R}),
    PowerAction.RESET: frozenset({R}),
    PowerAction.PAUSE: frozenset({R}),
    PowerAction.RESUME: frozenset({P}),
    PowerAction.SUSPEND: frozenset({R, P}),
}

# The state each action leads to.
RESULT: dict[PowerAction, PowerState] = {
    PowerAction.START: R,
    PowerAction.STOP: S,
    PowerAction.POWER_OFF: S,
    PowerAction.REBOOT: R,
    PowerAction.RESET: R,
    PowerAction.PAUSE: P,
    PowerAction.RESUME: R,
    PowerAction.SUSPEND: SU,
}

_HINTS: dict[tuple[PowerAction, PowerState], str] = {
    (PowerAction.START, R): "it is already running",
    (PowerAction.START, P): "it is paused: use resume()",
    (PowerAction.STOP, P): "it is paused: resume() it first, or stop(force=True)",
    (PowerAction.STOP, SU): "it is suspended: start() it first, or stop(force=True)",
    (PowerAction.RESUME, SU): "it is suspended: use start()",
}

DELETABLE = frozenset({S, SU, C, U})


def check(action: PowerAction, state: PowerState, vm_name: str) -> None:
    if state in ALLOWED_FROM[action]:
        return
    hint = _HINTS.get((action, state), f"that needs it to be {_states(ALLOWED_FROM[action])}")
    raise InvalidState(f"cannot {action.value.replace('_', ' ')} VM {vm_name!r}: it is {state}; {hint}")


def check_deletable(state: PowerState, vm_name: str) -> None:
    if state not in DELETABLE:
        raise InvalidState(
            f"cannot delete VM {vm_name!r} while it is {state}: stop it first (stop(force=True))"
        )


def _states(states: frozenset[PowerState]) -> str:
    return " or ".join(sorted(s.value for s in states))
