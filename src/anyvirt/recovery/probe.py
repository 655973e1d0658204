"""Is the failed host really gone? One connection attempt with a short deadline.

Recovery is for hosts that no longer answer; a host that answers still runs its
VMs, and moving them is ``host.evacuate``'s or ``vm.migrate``'s job. A host that
answers but refuses our credentials still answers. A host that neither answers nor
refuses within the deadline (a dead machine behind ssh, a black hole) counts as gone.
"""

from __future__ import annotations

import threading

from anyvirt.errors import AnyvirtError, ConnectionFailed, InvalidState, Timeout

#: seconds the failed host gets to answer
PROBE_TIMEOUT = 5.0


def refuse_if_answering(failed: str, safe_uri: str, timeout: float = PROBE_TIMEOUT) -> None:
    """InvalidState when ``failed`` answers a connection within ``timeout``."""
    from anyvirt.connect import connect

    outcome: list[object] = []

    def attempt() -> None:
        try:
            host = connect(failed, timeout=timeout)
        except (ConnectionFailed, Timeout):
            outcome.append("gone")
        except AnyvirtError as exc:  # it answered, with a refusal
            outcome.append(exc)
        else:
            host.close()
            outcome.append("answers")

    worker = threading.Thread(target=attempt, name="anyvirt-recover-probe", daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if not outcome or outcome[0] == "gone":
        return
    said = "" if outcome[0] == "answers" else f" (it answered: {outcome[0]})"
    raise InvalidState(
        f"{safe_uri} still answers{said}: its VMs may still run. Move them with "
        "host.evacuate(node) or vm.migrate(to=...) (anyvirt evacuate / anyvirt vm migrate); "
        "recover only a host that is down")
