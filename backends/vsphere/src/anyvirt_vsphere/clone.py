"""Full and linked clones, bulk clones, templates.

A linked clone shares its parent's disks through a child (delta) disk backed
by a snapshot: vSphere needs that snapshot, so the clone is made from the
VM's current snapshot, or, when the VM has none, from a snapshot named
``anyvirt-linked-clone-base`` taken for the purpose (and kept: its clones
depend on it).

Placement: the clone goes to the node asked for (``location.host`` plus that
host's resource pool), a datastore (``location.datastore``) and a folder.
vcsim 0.24.2 honours the pool, the datastore and the folder but keeps the
clone on the source's host; it also ignores ``diskMoveType`` and copies the
disk in full. A real vCenter honours all of them. So that a clone always
lands where it was asked, a clone found on another host than the one named
is moved there with ``RelocateVM_Task`` (a no-op step a real vCenter never
needs); if that move fails the clone is removed and the error raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anyvirt.errors import AnyvirtError, InvalidSpec, NotFound, TaskFailed
from anyvirt.kit.cleanup import noting
from anyvirt.model import VMSummary, check_name
from anyvirt.tasks import Job
from anyvirt_vsphere.inventory import HostRow, Inventory, stored_name, unescape_name
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.snapshots import create_snapshot, list_snapshots
from anyvirt_vsphere.tasks import cleanup_job, run_task, settle
from anyvirt_vsphere.vms import node_host, remove_leftover, summary_of

LINKED_BASE_SNAPSHOT = "anyvirt-linked-clone-base"


def find_folder(inventory: Inventory, folder: str | None) -> Any:
    """The datacenter's VM folder, or a folder in it by name (or slash-free path under it)."""
    root = inventory.datacenter().get("vmFolder")
    if folder is None:
        return root
    rows = inventory.collector.scan({vim.Folder: ("name", "childType")}, root=root, what="listing VM folders")
    for row in rows:
        if unescape_name(row.get("name", "")) == folder and "VirtualMachine" in (row.get("childType") or ()):
            return row.ref
    raise InvalidSpec(f"no VM folder named {folder!r}")


def create_folder(inventory: Inventory, name: str) -> str:
    """Make a VM folder under the datacenter's VM folder (driver extra, for placement)."""
    check_name(name, "folder name")
    stored = stored_name(name, "folder name")
    root = inventory.datacenter().get("vmFolder")
    inventory.session.call(
        lambda: root.CreateFolder(stored), f"creating folder {name!r}", read=False
    )
    return name


#: extraConfig key of a linked clone: the instance UUID of the VM whose disks it reads
LINKED_FROM_KEY = "anyvirt.linkedFrom"


def clone_vm(
    inventory: Inventory,
    vm_id: str,
    name: str,
    linked: bool,
    node: str | None,
    job: Job,
    *,
    datastore: str | None = None,
    folder: str | None = None,
    template: bool = False,
) -> VMSummary:
    """Clone ``vm_id`` as ``name``; a failure removes any half-made clone."""
    stored = stored_name(name, "clone name")
    vms = inventory.list_vms()
    source = next((vm for vm in vms if vm.id == vm_id), None)
    if source is None:
        raise NotFound(f"no VM with id {vm_id}")
    location = vim.vm.RelocateSpec()
    if node is not None or source.template:
        # a template has no resource pool: its clone goes on the node named (the gate has
        # checked it takes VMs and the clone fits), else where the template is registered,
        # as any clone stays with its source
        host = node_host(inventory, node or source.node)
        location.host = host.ref
        location.pool = inventory.resource_pool(host)
    else:
        host = None
    if datastore is not None:
        location.datastore = inventory.datastore(datastore, host).ref
    spec = vim.vm.CloneSpec(location=location, powerOn=False, template=template)
    spec.config = vim.vm.ConfigSpec(deviceChange=_fresh_macs(inventory, vm_id))
    if linked:
        spec.snapshot = _base_snapshot(inventory, vm_id, job)
        location.diskMoveType = "createNewChildDiskBacking"
        # the clone says whose disks it reads, so deleting that VM's disks can be refused
        # even where the disk chain does not show it (vcsim copies linked clones in full)
        spec.config.extraConfig = [vim.option.OptionValue(key=LINKED_FROM_KEY, value=vm_id)]
    target_folder = find_folder(inventory, folder)
    ref = inventory.vm_ref(vm_id)
    started: list[Any] = []
    what = f"cloning VM {vm_id} as {name!r}"
    try:
        new_ref = run_task(
            inventory.collector,
            lambda: ref.CloneVM_Task(folder=target_folder, name=stored, spec=spec),
            job,
            what,
            started,
        )
    except BaseException as exc:  # the original error is the one raised
        if not isinstance(exc, TaskFailed):  # timed out or cancelled: the task may still run
            with noting(exc, "waiting for the clone task to end"):
                settle(inventory.collector, started, what)
        with noting(exc, f"removing the half-made clone {name!r}"):
            remove_leftover(inventory, name, cleanup_job(what))
        raise
    if host is not None and node is not None:
        _ensure_on_host(inventory, new_ref, host, name, job)
    return summary_of(inventory, new_ref)


def _ensure_on_host(inventory: Inventory, ref: Any, host: HostRow, name: str, job: Job) -> None:
    """Move a clone that did not land on ``host`` there (vcsim ignores ``location.host``)."""
    props = inventory.collector.one(ref, vim.VirtualMachine, ("runtime.host",), what="reading the clone")
    landed = props.get("runtime.host") if props is not None else None
    if landed is None or str(landed._moId) == host.node.id:
        return
    spec = vim.vm.RelocateSpec(host=host.ref, pool=inventory.resource_pool(host))
    started: list[Any] = []
    try:
        run_task(
            inventory.collector,
            lambda: ref.RelocateVM_Task(spec, None),
            job,
            f"moving clone {name!r} to node {host.node.name!r}",
            started,
        )
    except BaseException as exc:
        if not isinstance(exc, TaskFailed):
            with noting(exc, "waiting for the move to end"):
                settle(inventory.collector, started, f"moving clone {name!r}")
        with noting(exc, f"removing the clone {name!r}"):
            remove_leftover(inventory, name, cleanup_job(f"moving clone {name!r}"))
        raise


def _fresh_macs(inventory: Inventory, vm_id: str) -> list[Any]:
    """Edits giving every NIC of the clone a newly generated MAC.

    vSphere regenerates only NICs whose address type is "generated" (vcsim
    not even those); a clone must never share a MAC with its source.
    """
    props = inventory.vm_props(vm_id, ("config.hardware.device",))
    edits = []
    for device in props.get("config.hardware.device") or ():
        if isinstance(device, vim.vm.device.VirtualEthernetCard):
            device.addressType = "generated"
            device.macAddress = None
            edits.append(
                vim.vm.device.VirtualDeviceSpec(
                    operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=device
                )
            )
    return edits


def _base_snapshot(inventory: Inventory, vm_id: str, job: Job) -> Any:
    snaps = list_snapshots(inventory, vm_id)
    current = next((s for s in snaps if s.current), None)
    if current is None:
        current = create_snapshot(inventory, vm_id, LINKED_BASE_SNAPSHOT, "base of linked clones", False, job)
    return inventory.session.ref(vim.vm.Snapshot, current.id)


def clone_many(
    inventory: Inventory,
    vm_id: str,
    names: Sequence[str],
    linked: bool,
    node: str | None,
    job: Job,
    *,
    datastore: str | None = None,
    folder: str | None = None,
) -> list[VMSummary]:
    """Bulk clone. Stops at the first failure; the clones made so far are kept and returned
    through the exception's ``clones`` attribute."""
    made: list[VMSummary] = []
    for index, name in enumerate(names):
        job.progress(100.0 * index / max(len(names), 1), f"cloning {name}")
        try:
            made.append(
                clone_vm(inventory, vm_id, name, linked, node, job, datastore=datastore, folder=folder)
            )
        except AnyvirtError as exc:
            exc.clones = list(made)  # type: ignore[attr-defined]
            raise
    return made


# ---------------------------------------------------------------- templates


def mark_as_template(inventory: Inventory, vm_id: str) -> None:
    ref = inventory.vm_ref(vm_id)
    inventory.session.call(ref.MarkAsTemplate, f"marking VM {vm_id} as a template", read=False)


def mark_as_vm(inventory: Inventory, vm_id: str, node: str | None) -> None:
    """Turn a template back into a VM; it needs a host and resource pool again."""
    ref = inventory.vm_ref(vm_id)
    if node is None:  # where the template is registered, as a clone of it goes
        registered = inventory.vm_props(vm_id, ("runtime.host",)).get("runtime.host")
        node = str(registered._moId) if registered is not None else None
    host = node_host(inventory, node)
    pool = inventory.resource_pool(host)
    inventory.session.call(
        lambda: ref.MarkAsVirtualMachine(pool, host.ref),
        f"turning template {vm_id} into a VM",
        read=False,
    )


def deploy_template(
    inventory: Inventory,
    template_id: str,
    name: str,
    node: str | None,
    job: Job,
    *,
    datastore: str | None = None,
    folder: str | None = None,
) -> VMSummary:
    """A new VM from a template (a full clone placed on a host and pool)."""
    return clone_vm(inventory, template_id, name, False, node, job, datastore=datastore, folder=folder)
