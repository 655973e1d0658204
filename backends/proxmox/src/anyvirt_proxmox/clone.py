"""Full and linked clones.

PVE makes linked clones only of templates (their disks are read-only base
volumes), so the connection declares ``LINKED_CLONE_OF_TEMPLATE`` and not
``LINKED_CLONE`` (a linked clone of any VM): the gate refuses a linked clone
of an ordinary VM before anything is sent. A clone to
another node needs the source's disks on shared storage, as PVE requires;
otherwise it is refused before the clone starts.

Clones of one source started together meet PVE's locks: the source's config lock
(``can't lock file '/var/lock/qemu-server/lock-N.conf' - got timeout``, after PVE's few
seconds of waiting) and the storage's cluster lock (``cfs-lock 'storage-X' error: got lock
request timeout``), so the third parallel clone of a template fails. Such a clone is
retried with growing, jittered pauses while the job's deadline allows; any other error
ends it at once.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Any

from anyvirt.errors import AnyvirtError, InvalidSpec
from anyvirt.model import Placement, VMSummary
from anyvirt.tasks import Job
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.tasks import run_task, settle
from anyvirt_proxmox.vms import ID_ATTEMPTS, is_id_collision, next_vmid, remove_if_ours

log = logging.getLogger("anyvirt.proxmox")

LOCK_TIMEOUT = re.compile(r"can't lock file '[^']*' - got timeout"
                          r"|cfs-lock '[^']*' error: got lock request timeout")
LOCK_FIRST_PAUSE = 0.5
LOCK_MAX_PAUSE = 8.0
LOCK_RETRIES = 12  # about a minute of pauses when the job has no deadline


def is_lock_timeout(exc: AnyvirtError) -> bool:
    """PVE gave up waiting for a lock another task held (nothing was made)."""
    return LOCK_TIMEOUT.search(str(exc)) is not None


def lock_pause(exc: AnyvirtError, waits: int, job: Job) -> float | None:
    """How long to wait before trying a clone again that failed on a PVE lock; None: do not."""
    if not is_lock_timeout(exc) or waits >= LOCK_RETRIES:
        return None
    # jitter: clones that collided once must not all come back at the same instant
    pause = min(LOCK_MAX_PAUSE, LOCK_FIRST_PAUSE * 2 ** waits) * random.uniform(0.5, 1.0)
    left = job.remaining()
    return None if left is not None and left <= pause else pause


def clone_vm(inv: Inventory, vm_id: str, name: str, linked: bool, placement: Placement,
             job: Job) -> VMSummary:
    node, storage = placement.node, placement.storage
    source = inv.vm_summary(vm_id)
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
    waits = 0
    while True:
        try:
            return _clone(inv, path, params, what, src_node, target, name, job)
        except AnyvirtError as exc:
            pause = lock_pause(exc, waits, job)
            if pause is None:
                raise
            log.info("%s: PVE's lock was busy, trying again in %.1f s", what, pause)
            job.sleep(pause)
            waits += 1


def _clone(inv: Inventory, path: tuple[object, ...], params: dict[str, Any], what: str, src_node: str,
           target: str | None, name: str, job: Job) -> VMSummary:
    """One clone, on a vmid PVE offers (another when someone took it meanwhile)."""
    for attempt in range(1, ID_ATTEMPTS + 1):
        new_id = next_vmid(inv)
        started: list[str] = []
        try:
            run_task(inv.session, "POST", path, job, what, started, newid=new_id, **params)
        except AnyvirtError as exc:
            if is_id_collision(exc) and attempt < ID_ATTEMPTS:
                continue
            _undo(inv, started, {src_node, target or src_node}, new_id, name, what)
            raise
        except BaseException:
            _undo(inv, started, {src_node, target or src_node}, new_id, name, what)
            raise
        inv.remember(str(new_id), target or src_node)
        return inv.vm_summary(str(new_id))
    raise AnyvirtError(f"{what}: every vmid PVE offered was taken meanwhile")


def _undo(inv: Inventory, started: list[str], nodes: set[str], new_id: int, name: str, what: str) -> None:
    """After a failed, timed-out or cancelled clone: let PVE's task end, then remove the half-made
    clone wherever it is (PVE makes it on the source's node and moves it to the target last)."""
    settle(inv.session, started, what)
    for node in sorted(nodes):
        remove_if_ours(inv, node, new_id, "", what, by_name=name)


def _check_shared(inv: Inventory, vm_id: str, src_node: str, target: str) -> None:
    shared = {str(s["storage"]) for s in inv.node_storages(src_node) if int(s.get("shared") or 0)}
    local = [d.id for d in cfg.disk_infos(inv.vm_config(vm_id)) if d.storage not in shared]
    if local:
        raise InvalidSpec(
            f"Proxmox VE clones to another node ({target!r}) only from shared storage; disks "
            f"{', '.join(local)} are local to {src_node!r}: clone here, then migrate the clone"
        )


def linked_clones(inv: Inventory, vm_id: str) -> list[str]:
    """Names of the VMs whose disks are linked clones of template ``vm_id``'s base disks, from
    the storages' content lists (PVE names each volume's ``parent``). An ordinary VM has none."""
    if not inv.vm_summary(vm_id).template:
        return []
    node = inv.node_of(vm_id)
    bases = [d for d in cfg.disk_infos(inv.vm_config(vm_id)) if d.path and d.storage]
    users: set[str] = set()
    for storage in sorted({d.storage for d in bases if d.storage}):
        rows = inv.session.get(("nodes", node, "storage", storage, "content"),
                               f"listing the volumes of {storage}", content="images")
        names = {d.path.split(":", 1)[1] for d in bases if d.storage == storage and d.path}
        for row in rows:
            parent = str(row.get("parent") or "").split("@")[0]
            if parent in names and str(row.get("vmid")) != str(vm_id):
                users.add(str(row.get("vmid")))
    if not users:
        return []
    by_id = {vm.id: vm.name for vm in inv.list_vms()}
    return sorted(by_id.get(u, u) for u in users)
