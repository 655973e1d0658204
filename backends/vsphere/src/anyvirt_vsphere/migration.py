"""vMotion and maintenance: RelocateVM_Task and host maintenance mode.

``MigrateVM_Task`` is the older API and missing in vcsim 0.24.2;
``RelocateVM_Task`` covers all three moves in one call: compute (host and
resource pool), storage (datastore), or both. A powered-on VM moves live.
"""

from __future__ import annotations

import time
from typing import Any

from anyvirt.errors import InvalidSpec
from anyvirt.model import MigrationResult
from anyvirt.tasks import Job
from anyvirt_vsphere.inventory import Inventory, unescape_name
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.tasks import run_task
from anyvirt_vsphere.vms import node_host


def relocate(
    inventory: Inventory,
    vm_id: str,
    node: str | None,
    job: Job,
    *,
    datastore: str | None = None,
) -> MigrationResult:
    """Move ``vm_id`` to ``node`` and/or ``datastore``."""
    if node is None and datastore is None:
        raise InvalidSpec("name a node or a datastore to move the VM to")
    props = inventory.vm_props(vm_id, ("name", "runtime.powerState", "runtime.host"))
    source_host = props.get("runtime.host")
    source = str(source_host._moId) if source_host is not None else ""
    live = props.get("runtime.powerState") == "poweredOn"
    spec = vim.vm.RelocateSpec()
    target_name = source
    host = None
    if node is not None:
        host = node_host(inventory, node)  # the gate has checked it takes VMs, and the VM fits
        spec.host = host.ref
        spec.pool = inventory.resource_pool(host)
        target_name = host.node.id
    if datastore is not None:
        spec.datastore = inventory.datastore(datastore, host).ref
    started = time.monotonic()
    ref: Any = props.ref
    run_task(
        inventory.collector,
        lambda: ref.RelocateVM_Task(spec, None),
        job,
        f"moving VM {vm_id} to {target_name}",
    )
    return MigrationResult(
        vm_id=vm_id,
        vm_name=unescape_name(str(props.get("name", ""))),
        source=source,
        target=target_name,
        live=live,
        duration_s=time.monotonic() - started,
    )


def set_maintenance(inventory: Inventory, node_id: str, on: bool, job: Job) -> None:
    host = inventory.host(node_id)
    ref = host.ref
    timeout = max(int(job.remaining() or 0), 0)
    if on:
        run_task(
            inventory.collector,
            lambda: ref.EnterMaintenanceMode_Task(timeout, False, None),
            job,
            f"putting node {host.node.name!r} into maintenance mode",
        )
    else:
        run_task(
            inventory.collector,
            lambda: ref.ExitMaintenanceMode_Task(timeout),
            job,
            f"taking node {host.node.name!r} out of maintenance mode",
        )
