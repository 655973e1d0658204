"""Creating, describing, changing and deleting VMs.

A new VM's id comes from ``/cluster/nextid``, which does not reserve it: a
create that meets an id taken meanwhile asks again (a few times). Each
create carries an SMBIOS UUID made here, so a half-made VM left by a
timeout or cancel is recognised as ours, and only ours is removed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from anyvirt.errors import AlreadyExists, AnyvirtError, InvalidSpec, InvalidState, NotFound, TaskFailed
from anyvirt.model import Firmware, VMInfo, VMSpec, VMSummary
from anyvirt.tasks import Job
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox import console, image_import
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.tasks import cleanup_job, run_task, settle, wait_task

log = logging.getLogger("anyvirt.proxmox")

ID_ATTEMPTS = 5
SCSI_CONTROLLER = "virtio-scsi-single"
# delete a VM with everything: its disks (also unreferenced ones) and its HA, backup and
# replication entries
DESTROY_ALL: dict[str, Any] = {"purge": 1, "destroy-unreferenced-disks": 1}


def is_id_collision(exc: AnyvirtError) -> bool:
    """PVE's words for a vmid taken between nextid and create (in the request or in the worker)."""
    return isinstance(exc, AlreadyExists | TaskFailed) and "already exists" in str(exc)


def next_vmid(inv: Inventory) -> int:
    return int(inv.session.get(("cluster", "nextid"), "asking for a free vmid"))


def create_params(inv: Inventory, spec: VMSpec, node: str) -> dict[str, Any]:
    """The POST /nodes/{node}/qemu parameters for ``spec``; unknown storages and bridges are
    InvalidSpec here, before the VM is made."""
    params: dict[str, Any] = {
        "name": spec.name, "cores": spec.cpus, "sockets": 1, "memory": str(spec.memory_mib),
        "ostype": cfg.ostype(spec.guest_os),
        # a serial port PVE's terminal reaches: vm.console() (PVE gives VMs none by default)
        console.CREATED_PORT[0]: console.CREATED_PORT[1],
    }
    if spec.description:
        params["description"] = spec.description
    storages = {str(s["storage"]): s for s in inv.node_storages(node)} if (
        spec.disks or spec.firmware is Firmware.EFI) else {}
    default = max(storages.values(), key=lambda s: int(s.get("avail") or 0))["storage"] if storages else None

    def storage_for(wanted: str | None) -> str:
        name = wanted or default
        if name is None or name not in storages:
            known = ", ".join(sorted(storages)) or "none"
            raise InvalidSpec(f"no storage {name!r} for VM disks on node {node!r} (there: {known})")
        return str(name)

    for key, disk in zip(cfg.drive_keys(spec.disks), spec.disks, strict=True):
        # an image's disk is made from its upload (import-from=, added once it is uploaded)
        size = "0" if disk.image is not None else cfg.gib_text(disk.size_gib or 1)
        params[key] = f"{storage_for(disk.storage)}:{size}"
    if any(key.startswith("scsi") for key in cfg.drive_keys(spec.disks)):
        params["scsihw"] = SCSI_CONTROLLER
    if spec.firmware is Firmware.EFI:
        params["bios"] = "ovmf"
        params["efidisk0"] = f"{storage_for(None)}:1,efitype=4m,pre-enrolled-keys=0"
    if spec.nics:
        bridges = inv.bridges(node)
        for i, nic in enumerate(spec.nics):
            params[f"net{i}"] = cfg.nic_value(nic, _bridge(nic.network, bridges, node))
    return params


def _bridge(network: str | None, bridges: list[str], node: str) -> str:
    if network in bridges:
        return str(network)
    if network in (None, "default") and bridges:
        return bridges[0]  # PVE has no "default" network; its first bridge (vmbr0) is that
    raise InvalidSpec(f"no bridge {network!r} on node {node!r} (there: {', '.join(bridges) or 'none'})")


def create_vm(inv: Inventory, spec: VMSpec, job: Job) -> VMSummary:
    cfg.check_spec(spec)
    node = spec.node  # named by the caller or the gate (``schedules_vms`` is False)
    if node is None:
        raise InvalidSpec("name a node: Proxmox VE places a VM on the node it is sent to")
    params = create_params(inv, spec, node)
    images = [(k, d) for k, d in zip(cfg.drive_keys(spec.disks), spec.disks, strict=True) if d.image]
    if not images:
        return _create(inv, spec, node, params, job)
    stores = image_import.import_storages(inv, node)
    if not stores:
        raise InvalidSpec(f"no storage on node {node!r} takes 'import' content, which disk images "
                          "are uploaded as: enable it on a file storage (PVE 8.2 or later)")
    uploads: dict[str, image_import.Uploaded] = {}
    try:
        for key, disk in images:
            assert disk.image is not None
            uploads[key] = image_import.upload(inv, node, str(stores[0]["storage"]), disk.image, job,
                                               disk.format)
            params[key] += f",import-from={uploads[key].volid}"
        summary = _create(inv, spec, node, params, job)
        for key, disk in images:
            _grow(inv, summary.id, node, key, disk.size_bytes, uploads[key].virtual_size, job)
        return summary
    finally:
        image_import.remove(inv, node, list(uploads.values()))


def _grow(inv: Inventory, vm_id: str, node: str, key: str, wanted: int | None, has: int, job: Job) -> None:
    """An imported disk keeps its image's size; a larger DiskSpec.size_gib grows it."""
    if wanted is None or wanted <= has:
        return
    job.check()
    upid = inv.session.put(("nodes", node, "qemu", cfg.vmid(vm_id), "resize"), f"growing {key} of VM {vm_id}",
                           disk=key, size=f"{-(-wanted // 1024)}K")
    if isinstance(upid, str) and upid.startswith("UPID:"):
        wait_task(inv.session, upid, job, f"growing {key} of VM {vm_id}")


def _create(inv: Inventory, spec: VMSpec, node: str, params: dict[str, Any], job: Job) -> VMSummary:
    marker = str(uuid.uuid4())
    params = dict(params, smbios1=f"uuid={marker}")
    what = f"creating VM {spec.name!r}"
    for attempt in range(1, ID_ATTEMPTS + 1):
        new_id = next_vmid(inv)
        started: list[str] = []
        try:
            run_task(inv.session, "POST", ("nodes", node, "qemu"), job, what, started, vmid=new_id, **params)
        except AnyvirtError as exc:
            if is_id_collision(exc) and attempt < ID_ATTEMPTS:
                continue  # another client took the id first; PVE made nothing of ours
            settle(inv.session, started, what)
            remove_if_ours(inv, node, new_id, marker, what)
            raise
        except BaseException:
            settle(inv.session, started, what)
            remove_if_ours(inv, node, new_id, marker, what)
            raise
        inv.remember(str(new_id), node)
        return inv.vm_summary(str(new_id))
    raise AlreadyExists(f"{what}: every vmid PVE offered was taken meanwhile ({ID_ATTEMPTS} tries)")


def remove_if_ours(inv: Inventory, node: str, vm_id: int, marker: str, what: str,
                   by_name: str | None = None) -> None:
    """Destroy VM ``vm_id`` if it carries our SMBIOS ``marker`` (a create we started), or, for a
    clone (whose SMBIOS UUID PVE makes), the name we gave it at the id we chose."""
    session = inv.session
    try:
        config = session.get(("nodes", node, "qemu", vm_id, "config"), f"checking after {what}")
    except NotFound:
        return  # nothing was left (PVE's worker removes a VM whose create failed)
    except AnyvirtError as exc:
        _left_behind(vm_id, node, what, "could not check whether it was left", exc)
        return
    ours = cfg.smbios_uuid(config) == marker if by_name is None else config.get("name") == by_name
    if not ours:
        return
    job = cleanup_job(what)
    params = dict(DESTROY_ALL)
    if session.user == "root@pam":
        params["skiplock"] = 1  # an interrupted create leaves its 'create' lock behind
    try:
        upid = session.delete(("nodes", node, "qemu", vm_id), f"removing what {what} left", **params)
        wait_task(session, upid, job, f"removing what {what} left")
    except AnyvirtError as exc:
        _left_behind(vm_id, node, what, "removing it failed", exc)
        return
    inv.forget(str(vm_id))


def _left_behind(vm_id: int, node: str, what: str, why: str, exc: AnyvirtError) -> None:
    """A cleanup that failed is said out loud: nobody may be waiting for the error it undoes
    (the caller of a create that timed out was told so already)."""
    log.error("after %s: VM %s on node %s may be left on Proxmox VE (%s: %s); remove it by hand",
              what, vm_id, node, why, exc)


def pending_changes(inv: Inventory, vm_id: str) -> dict[str, Any]:
    """Config changes PVE could not apply to the running VM: key -> value at the next start
    (None: to be removed)."""
    rows = inv.vm_get(vm_id, ("pending",), f"reading pending changes of VM {vm_id}")
    return {str(r["key"]): (None if r.get("delete") else r.get("pending")) for r in rows
            if "pending" in r or r.get("delete")}


def vm_info(inv: Inventory, vm_id: str) -> VMInfo:
    """Config, state and pending changes (``extra["pending"]``): three requests, one VM."""
    config = inv.vm_config(vm_id)
    summary = inv.vm_summary(vm_id)
    pending = pending_changes(inv, vm_id)
    return VMInfo(
        id=summary.id, name=summary.name, state=summary.state, raw_state=summary.raw_state,
        cpus=cfg.cpus(config), memory_mib=cfg.memory_mib(config), node=summary.node,
        firmware=cfg.firmware(config), guest_os=cfg.guest_os(config),
        description=str(config.get("description", "")), disks=cfg.disk_infos(config),
        nics=cfg.nic_infos(config), template=bool(int(config.get("template") or 0)),
        extra={"uuid": cfg.smbios_uuid(config), "digest": config.get("digest"),
               "ostype": config.get("ostype"), "tags": config.get("tags"), "lock": config.get("lock"),
               "pending": pending, "config": config},
    )


def delete_vm(inv: Inventory, vm_id: str, job: Job) -> None:
    node = inv.node_of(vm_id)
    run_task(inv.session, "DELETE", ("nodes", node, "qemu", cfg.vmid(vm_id)), job,
             f"deleting VM {vm_id}", None, **DESTROY_ALL)
    inv.forget(vm_id)


def reconfigure_vm(inv: Inventory, vm_id: str, cpus: int | None, memory_mib: int | None,
                   job: Job) -> bool:
    """PUT the change with the config's digest: a concurrent change is InvalidState, not a lost
    update. Returns True only if PVE applied it to the running VM (nothing left pending)."""
    job.check()
    config = inv.vm_config(vm_id)
    changes: dict[str, Any] = {}
    if cpus is not None:
        changes["cores"] = cpus
        if int(config.get("sockets") or 1) != 1:
            changes["sockets"] = 1  # anyvirt's cpus are cores of one socket
    if memory_mib is not None:
        if memory_mib < cfg.MIN_MEMORY_MIB:
            raise InvalidSpec(f"Proxmox VE gives a VM at least {cfg.MIN_MEMORY_MIB} MiB")
        changes["memory"] = str(memory_mib)
    delete = "vcpus" if cpus is not None and "vcpus" in config else None
    node = inv.node_of(vm_id)
    path = ("nodes", node, "qemu", cfg.vmid(vm_id))
    try:
        inv.session.put((*path, "config"), f"reconfiguring VM {vm_id}", digest=config.get("digest"),
                        delete=delete, **changes)
    except InvalidState as exc:
        if "checksum" in str(exc):
            raise InvalidState(f"VM {vm_id} was changed by someone else meanwhile; read it again and "
                               "retry") from exc
        raise
    waiting = set(pending_changes(inv, vm_id))
    running = inv.vm_summary(vm_id).state.value == "running"
    return running and not (waiting & set(changes))


def mark_template(inv: Inventory, vm_id: str, job: Job) -> VMSummary:
    node = inv.node_of(vm_id)
    run_task(inv.session, "POST", ("nodes", node, "qemu", cfg.vmid(vm_id), "template"), job,
             f"making VM {vm_id} a template")
    return inv.vm_summary(vm_id)
