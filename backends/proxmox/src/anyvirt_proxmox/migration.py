"""Moving a VM between nodes of one cluster.

First the precheck PVE's own GUI makes, ``GET .../migrate?target=node``: a
node PVE would not allow, or local resources (passed-through devices) that
pin the VM, are refused here, before anything moves. Local disks are
copied along (``with-local-disks=1``); where the VM's storage does not exist
on the target, ``targetstorage`` names one that does. A running VM moves
live (``online=1``). An HA-managed VM's move is a request to the HA manager,
so the move is over when the VM is seen on the target, not when the task ends.
"""

from __future__ import annotations

import time
from typing import Any

from anyvirt.errors import InvalidSpec, InvalidState
from anyvirt.model import MigrationResult, Placement
from anyvirt.tasks import Job
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.tasks import run_task


def precheck(inv: Inventory, vm_id: str, src_node: str, target: str,
             storage: str | None = None) -> dict[str, Any]:
    """The parameters the move needs, or InvalidState saying why PVE would refuse it."""
    path = ("nodes", src_node, "qemu", cfg.vmid(vm_id), "migrate")
    pre: dict[str, Any] = inv.session.get(path, f"checking the move of VM {vm_id}", target=target)
    allowed = pre.get("allowed_nodes")
    not_allowed = pre.get("not_allowed_nodes") or {}
    reasons = not_allowed.get(target) if isinstance(not_allowed.get(target), dict) else {}
    unavailable = list((reasons or {}).get("unavailable_storages") or [])
    if allowed is not None and target not in allowed and not unavailable:
        raise InvalidState(f"Proxmox VE does not allow VM {vm_id} on node {target!r} "
                           f"(allowed: {', '.join(allowed) or 'none'})")
    resources = [str(r) for r in pre.get("local_resources") or ()]
    if resources:
        raise InvalidState(f"VM {vm_id} uses resources local to {src_node!r} ({', '.join(resources)}), "
                           "so Proxmox VE cannot move it")
    disks = [d for d in pre.get("local_disks") or () if not int(d.get("is_unused") or 0)]
    cdroms = [str(d.get("volid")) for d in disks if int(d.get("cdrom") or 0)]
    if cdroms:
        raise InvalidState(f"VM {vm_id} has a local CD-ROM image ({', '.join(cdroms)}): eject it first")
    params: dict[str, Any] = {"target": target}
    if disks:
        params["with-local-disks"] = 1
    if unavailable or storage:
        params["with-local-disks"] = 1
        params["targetstorage"] = storage or _target_storage(inv, target)
    return params


def _target_storage(inv: Inventory, target: str) -> str:
    storages = inv.node_storages(target)
    if not storages:
        raise InvalidState(f"node {target!r} has no storage for VM disks")
    return str(max(storages, key=lambda s: int(s.get("avail") or 0))["storage"])


def migrate(inv: Inventory, vm_id: str, placement: Placement, live: bool, job: Job) -> MigrationResult:
    node = placement.node
    source = inv.vm_summary(vm_id)
    src_node = source.node or inv.node_of(vm_id)
    if node is None or node == src_node:
        raise InvalidSpec(f"VM {source.name!r} is on node {src_node!r}: name another node of the cluster")
    params = precheck(inv, vm_id, src_node, node, placement.storage)
    if live:
        params["online"] = 1
    started = time.monotonic()
    what = f"moving VM {source.name!r} to {node!r}"
    outcome = run_task(inv.session, "POST", ("nodes", src_node, "qemu", cfg.vmid(vm_id), "migrate"), job,
                       what, **params)
    job.wait_for(lambda: inv.node_of(vm_id, refresh=True) == node, f"VM {source.name!r} on {node!r}",
                 interval=0.05)
    base = inv.session.target.safe_uri.split("?")[0]
    return MigrationResult(
        vm_id=source.id, vm_name=source.name, source=f"{base}/{src_node}", target=f"{base}/{node}",
        live=live, duration_s=round(time.monotonic() - started, 3), warnings=outcome.warnings,
    )
