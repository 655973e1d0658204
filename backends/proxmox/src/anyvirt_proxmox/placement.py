"""Where a new VM goes when the caller names no node: the online node whose memory is least given
out to VMs (from one ``/cluster/resources`` request). To be replaced by the core kit's
least-loaded placement when it lands."""

from __future__ import annotations

from anyvirt.errors import InvalidState
from anyvirt_proxmox.inventory import Inventory


def pick_node(inv: Inventory) -> str:
    rows = inv.resources()
    nodes = {str(r["node"]): int(r.get("maxmem") or 0) for r in rows
             if r.get("type") == "node" and r.get("status") == "online"}
    if not nodes:
        raise InvalidState(f"no node of {inv.session.target.safe_uri} is online")
    given = dict.fromkeys(nodes, 0)
    for row in rows:
        if row.get("type") == "qemu" and row.get("node") in given and not int(row.get("template") or 0):
            given[str(row["node"])] += int(row.get("maxmem") or 0)
    return min(nodes, key=lambda n: (given[n] / max(nodes[n], 1), n))
