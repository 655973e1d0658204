"""Full and linked clones.

PVE makes linked clones only of templates (their disks are read-only base
volumes): a linked clone of an ordinary VM is refused with ``NotSupported``
before anything is sent, saying ``mark_template()`` is the way. A clone to
another node needs the source's disks on shared storage, as PVE requires;
otherwise it is refused before the clone starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anyvirt.errors import AnyvirtError, InvalidSpec, NotSupported
from anyvirt.model import Capability, VMSummary
from anyvirt.tasks import Job
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.tasks import run_task, settle
from anyvirt_proxmox.vms import ID_ATTEMPTS, is_id_collision, next_vmid, remove_if_ours


def clone_vm(inv: Inventory, vm_id: str, name: str, linked: bool, node: str | None, job: Job,
             storage: str | None = None) -> VMSummary:
    cfg.check_vm_name(name)
    source = inv.vm_summary(vm_id)
    if linked and not source.template:
        raise NotSupported("proxmox", Capability.LINKED_CLONE,
                           f"Proxmox VE makes linked clones only of templates; {source.name!r} is not one "
                           "(mark_template() it, or make a full clone)")
    if linked and storage is not None:
        raise InvalidSpec("a linked clone stays on its template's storage: give no storage")
    src_node = source.node or inv.node_of(vm_id)
    target = node if node and node != src_node else None
    if target is not None:
        _check_shared(inv, vm_id, src_node, target)
    params: dict[str, Any] = {"name": name, "full": 0 if linked else 1, "target": target,
                              "storage": storage}
    what = f"cloning VM {source.name!r} as {name!r}"
    path = ("nodes", src_node, "qemu", cfg.vmid(vm_id), "clone")
    for attempt in range(1, ID_ATTEMPTS + 1):
        new_id = next_vmid(inv)
        started: list[str] = []
        try:
            run_task(inv.session, "POST", path, job, what, started, newid=new_id, **params)
        except AnyvirtError as exc:
            if is_id_collision(exc) and attempt < ID_ATTEMPTS:
                continue
            settle(inv.session, started, what)
            remove_if_ours(inv, target or src_node, new_id, "", what, by_name=name)
            raise
        except BaseException:
            settle(inv.session, started, what)
            remove_if_ours(inv, target or src_node, new_id, "", what, by_name=name)
            raise
        inv.remember(str(new_id), target or src_node)
        return inv.vm_summary(str(new_id))
    raise AnyvirtError(f"{what}: every vmid PVE offered was taken meanwhile")


def clone_many(inv: Inventory, vm_id: str, names: Sequence[str], linked: bool, node: str | None,
               job: Job, storage: str | None = None) -> list[VMSummary]:
    """Bulk clone, one name after another (PVE holds the source's lock per clone)."""
    return [clone_vm(inv, vm_id, n, linked, node, job, storage=storage) for n in names]


def _check_shared(inv: Inventory, vm_id: str, src_node: str, target: str) -> None:
    shared = {str(s["storage"]) for s in inv.node_storages(src_node) if int(s.get("shared") or 0)}
    local = [d.id for d in cfg.disk_infos(inv.vm_config(vm_id)) if d.storage not in shared]
    if local:
        raise InvalidSpec(
            f"Proxmox VE clones to another node ({target!r}) only from shared storage; disks "
            f"{', '.join(local)} are local to {src_node!r}: clone here, then migrate the clone"
        )
