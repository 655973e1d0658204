"""Where a new VM goes when the caller names no node: the least-loaded node that takes VMs.

"Load" is memory given out (the sum of the VMs' configured memory on the
node, running or not), the resource a hypervisor runs out of first and the
one a stopped VM still claims the moment it starts. Nodes in maintenance,
offline or in an unknown state take no new VMs, as on a real cluster. Ties go to the node with
the smallest id, so the choice is the same on every run.
"""

from __future__ import annotations

from collections.abc import Iterable

from anyvirt.errors import InvalidState
from anyvirt.model import NodeInfo


def takes_vms(node: NodeInfo) -> bool:
    """Whether a node accepts new VMs: online (not offline, not unknown) and not in maintenance."""
    return node.state == "online" and not node.maintenance


def least_loaded(nodes: Iterable[NodeInfo], vms: Iterable[tuple[str, int]],
                 *, where: str = "this connection") -> NodeInfo:
    """The node with the least memory given out. ``vms`` are (node id, memory MiB) pairs.

    Raises ``InvalidState`` when no node takes VMs.
    """
    candidates = {n.id: n for n in nodes if takes_vms(n)}
    if not candidates:
        raise InvalidState(f"no node of {where} takes new VMs (all in maintenance or offline)")
    load = dict.fromkeys(candidates, 0)
    for node_id, memory_mib in vms:
        if node_id in load:
            load[node_id] += memory_mib
    return candidates[min(load, key=lambda n: (load[n], n))]


__all__ = ["least_loaded", "takes_vms"]
