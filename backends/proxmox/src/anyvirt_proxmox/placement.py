"""Where a new VM goes when the caller names no node: the kit's least-loaded node, from one
``/cluster/resources`` request (nodes and guests together)."""

from __future__ import annotations

from anyvirt.kit.placement import least_loaded
from anyvirt.model import MIB
from anyvirt_proxmox.inventory import Inventory, node_info


def pick_node(inv: Inventory) -> str:
    rows = inv.resources()
    nodes = [node_info(r, None, "") for r in rows if r.get("type") == "node"]
    given = [(str(r["node"]), int(r.get("maxmem") or 0) // MIB) for r in rows
             if r.get("type") == "qemu" and not int(r.get("template") or 0)]
    return least_loaded(nodes, given, where=inv.session.target.safe_uri).id
