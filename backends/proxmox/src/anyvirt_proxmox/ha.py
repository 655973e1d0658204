"""PVE's own HA: what it says of the guests of a node that is down (``host.recover``).

Proxmox VE recovers the guests it manages itself: its HA manager fences a failed node
(the node's watchdog) and restarts each HA resource (``vm:ID``) on another node of its
group. anyvirt only reports what the HA status says of them. A guest outside HA cannot
be brought back through the API at all: its configuration lives in the failed node's
directory of the cluster file system (``/etc/pve/nodes/NODE/qemu-server/ID.conf``) and
no API call moves it, so recovering it is ``NotSupported`` (``node.recover.restart``)
before anything is sent.
"""

from __future__ import annotations

from typing import Any

from anyvirt.model import RecoveryCandidate, VMSummary
from anyvirt_proxmox.session import Session

#: why anyvirt cannot bring a guest of a failed PVE node up itself (``why_not``)
WHY_NO_RESTART = (
    "Proxmox VE's API cannot move a guest off a node that is down (its config stays in "
    "/etc/pve/nodes/<node>/qemu-server/); PVE's HA manager recovers the guests it manages: "
    "put them under HA (ha-manager add vm:<id>, or POST /cluster/ha/resources)")


def candidates(session: Session, vms: list[VMSummary], node: str) -> list[RecoveryCandidate]:
    """The guests of ``node``: those under PVE's HA with what its status says of them, the
    others as anyvirt would have to bring them back (which PVE cannot)."""
    on_node = [vm for vm in vms if vm.node == node]
    if not on_node:
        return []
    managed = {str(r.get("sid")): r for r in session.get(
        ("cluster", "ha", "resources"), "reading PVE's HA resources", type="vm")}
    status = {str(r.get("sid")): r for r in session.get(
        ("cluster", "ha", "status", "current"), "reading PVE's HA status")
        if r.get("type") == "service"}
    out = []
    for vm in on_node:
        sid = f"vm:{vm.id}"
        if sid in managed:
            out.append(RecoveryCandidate(vm, by_cluster=_said(sid, managed[sid], status.get(sid))))
        else:
            out.append(RecoveryCandidate(vm))
    return out


def _said(sid: str, resource: dict[str, Any], service: dict[str, Any] | None) -> str:
    """PVE's HA status of one resource, in its own words."""
    wanted = resource.get("state") or "started"
    if service is None:
        return f"PVE HA manages {sid} (requested {wanted}); its status lists no service yet"
    state = service.get("state") or "unknown"
    where = service.get("node") or "?"
    said = service.get("status") or f"{sid} ({where}, {state})"
    return f"PVE HA: {said}; state {state} on {where}, requested {wanted}"
