"""Recovery of a failed host's VMs: unregister the stale entry, register the .vmx on a live host.

A host that no longer answers keeps its VMs in vCenter's inventory, disconnected, with
their last known power state. Those whose files sit on datastores that live hosts see
come back as vSphere HA would bring them: the stale inventory entry is removed
(``UnregisterVM``), the ``.vmx`` is registered on a live host from its datastore path
(``Folder.RegisterVM_Task`` with that host and its cluster's root pool), and it is
powered on if it ran. The gate has proven the host down (or been told it is fenced)
before anything here runs.

When a host is down: vCenter reports ``runtime.powerState`` poweredOff (or standBy) only
for a host it powered off itself; a host that stops answering is notResponding with an
unknown power state, which tells a dead host from an isolated one no better than a
missed heartbeat does (vSphere HA asks heartbeat datastores). So such a host is
"unknown" to anyvirt and its recovery needs ``fenced=True``.
"""

from __future__ import annotations

from typing import Any

from anyvirt.errors import AnyvirtError, TaskFailed
from anyvirt.model import RecoveryCandidate, VMSummary
from anyvirt.tasks import Job
from anyvirt_vsphere.inventory import LIST_PATHS, VM_PATHS, HostRow, Inventory, unescape_name, vm_summary
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.tasks import cleanup_job, run_task

_RECOVERY_PATHS = (*LIST_PATHS, "config.files.vmPathName", "datastore")


def candidates(inventory: Inventory, node_id: str) -> list[RecoveryCandidate]:
    """The VMs of host ``node_id``, each with the live hosts that see every datastore it
    uses (its .vmx and disks), or why none does."""
    failed = inventory.host(node_id)
    rows = inventory.collector.scan(
        {vim.VirtualMachine: _RECOVERY_PATHS, vim.HostSystem: ("vm", "datastore"),
         vim.Datastore: ("name",)},
        root=inventory.scope(), what=f"reading the VMs of {failed.node.name}")
    hosts = {r.moid: r for r in rows if isinstance(r.ref, vim.HostSystem)}
    names = {r.moid: unescape_name(r.get("name", "")) for r in rows if isinstance(r.ref, vim.Datastore)}
    live = [h for h in inventory.hosts() if h.node.state == "online" and h.node.id != failed.node.id]
    sees = {h.node.id: {str(d._moId) for d in hosts[h.node.id].get("datastore") or ()}
            for h in live if h.node.id in hosts}
    on_failed = {str(ref._moId) for ref in (hosts[failed.node.id].get("vm") or ())} \
        if failed.node.id in hosts else set()
    out = []
    for row in rows:
        if not isinstance(row.ref, vim.VirtualMachine) or row.moid not in on_failed:
            continue
        summary = vm_summary(row, failed.node.id)
        if summary is None:
            continue
        used = {str(d._moId) for d in row.get("datastore") or ()}
        nodes = frozenset(node for node, seen in sees.items() if used <= seen)
        blocked = ""
        if not nodes:
            stores = ", ".join(sorted(names.get(d, d) for d in used)) or "no datastore"
            blocked = (f"its files are on {stores}, which no live host sees: only "
                       f"{failed.node.name!r} did")
        out.append(RecoveryCandidate(summary, nodes=nodes, blocked=blocked))
    return out


def recover(inventory: Inventory, vm_id: str, node_id: str, start: bool, job: Job) -> VMSummary:
    """Unregister the VM from its failed host, register its .vmx on ``node_id``, power it on
    if ``start``. If the registration fails, the VM is registered back where it was."""
    props = inventory.vm_props(vm_id, ("name", "config.files.vmPathName", "config.template",
                                       "parent", "resourcePool"))
    vmx = str(props.get("config.files.vmPathName") or "")
    template = bool(props.get("config.template", False))
    name = str(props.get("name", ""))
    folder = props.get("parent") or inventory.datacenter().get("vmFolder")
    host = inventory.host(node_id)
    what = f"recovering VM {unescape_name(name)!r} on {host.node.name}"
    old: Any = props.ref
    job.check()
    inventory.session.call(lambda: old.UnregisterVM(), f"{what}: removing its stale entry",
                           read=False)
    try:
        new = _register(inventory, folder, vmx, name, template, host, job, what)
    except BaseException as failed:
        _register_back(inventory, folder, vmx, name, props.get("resourcePool"), failed)
        raise
    if start:
        try:
            run_task(inventory.collector, lambda: new.PowerOnVM_Task(host.ref), job,
                     f"{what}: powering it on")
        except AnyvirtError as failed:
            raise TaskFailed(f"VM {unescape_name(name)!r} is registered on {host.node.name} "
                             f"but did not power on: {failed}") from failed
    row = inventory.collector.one(new, vim.VirtualMachine, VM_PATHS, what=what)
    summary = vm_summary(row) if row is not None else None
    if summary is None:
        raise TaskFailed(f"{what}: the registered VM vanished")
    return summary


def _register(inventory: Inventory, folder: Any, vmx: str, name: str, template: bool,
              host: HostRow, job: Job, what: str) -> Any:
    pool = None if template else inventory.resource_pool(host)
    return run_task(
        inventory.collector,
        lambda: folder.RegisterVM_Task(path=vmx, name=name, asTemplate=template, pool=pool,
                                       host=host.ref),
        job, f"{what}: registering {vmx}")


def _register_back(inventory: Inventory, folder: Any, vmx: str, name: str, pool: Any,
                   failed: BaseException) -> None:
    """Put the VM back in the inventory where it was, so a failed recovery leaves no VM
    unregistered; if even that fails, the error says where its .vmx is."""
    try:
        run_task(inventory.collector,
                 lambda: folder.RegisterVM_Task(path=vmx, name=name, asTemplate=False,
                                                pool=pool, host=None),
                 cleanup_job("a failed recovery"), f"registering {vmx} back")
    except BaseException as also:  # the first error is the one raised
        failed.add_note(f"registering it back failed too ({also}): register {vmx} by hand")
