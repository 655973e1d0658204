"""VM create, delete, detail and reconfigure."""

from __future__ import annotations

from typing import Any

from anyvirt.errors import (
    AnyvirtError,
    InvalidSpec,
    InvalidState,
    NotFound,
    TaskFailed,
)
from anyvirt.kit.cleanup import noting
from anyvirt.model import DiskInfo, Firmware, NicInfo, NicSpec, VMInfo, VMSpec, VMSummary, evolve
from anyvirt.tasks import Job
from anyvirt_vsphere import nfc_import
from anyvirt_vsphere.collector import Props
from anyvirt_vsphere.configspec import check_spec, config_spec, guest_name
from anyvirt_vsphere.datastore_files import remove_path
from anyvirt_vsphere.image_import import is_local_image, upload_images
from anyvirt_vsphere.inventory import (
    VM_PATHS,
    HostRow,
    Inventory,
    datastore_path,
    escape_name,
    split_datastore_path,
    unescape_name,
    vm_summary,
)
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.tasks import cleanup_job, run_task, settle

INFO_PATHS = (
    *VM_PATHS,
    "config.hardware.device",
    "config.firmware",
    "config.guestId",
    "config.annotation",
    "config.cpuHotAddEnabled",
    "config.memoryHotAddEnabled",
    "guest.toolsRunningStatus",
)


# ---------------------------------------------------------------- placement


def node_host(inventory: Inventory, node: str | None) -> HostRow:
    """The host of ``node``. The gate has checked it takes VMs and fits the VM, and names
    one where the caller did not (vSphere does not schedule: ``schedules_vms`` is False);
    ``None`` still means the only host of a standalone ESXi."""
    if node is not None:
        return inventory.host(node)
    hosts = inventory.hosts()
    if len(hosts) != 1:
        raise InvalidSpec("name a node: this vSphere connection has several hosts")
    return hosts[0]


#: the name portable specs (and backups from libvirt) use for "the usual network"; on a
#: host with no network of that name it means the default choice below, as ``None`` does
PORTABLE_DEFAULT_NETWORK = "default"


def resolve_networks(
    inventory: Inventory, host: HostRow, nics: tuple[NicSpec, ...]
) -> list[tuple[NicSpec, Props, str | None]]:
    """Each NIC's port group: the one named, else the first standard port group by name
    (distributed ones only when the host has no standard one)."""
    if not nics:
        return []
    rows = inventory.networks(host)
    by_name = {unescape_name(r.get("name", "")): r for r in rows}
    out: list[tuple[NicSpec, Props, str | None]] = []
    for nic in nics:
        if nic.network is None or (nic.network == PORTABLE_DEFAULT_NETWORK and nic.network not in by_name):
            standard = sorted(
                (r for r in rows if not isinstance(r.ref, vim.dvs.DistributedVirtualPortgroup)),
                key=lambda r: str(r.get("name", "")),
            )
            if not standard and not rows:
                raise InvalidSpec("the host has no network to attach a NIC to")
            row = (standard or rows)[0]
        else:
            found = by_name.get(nic.network)
            if found is None:
                known = ", ".join(sorted(by_name)) or "none"
                raise InvalidSpec(
                    f"no network or port group named {nic.network!r} on node "
                    f"{host.node.name!r} (known: {known})"
                )
            row = found
        switch = None
        if isinstance(row.ref, vim.dvs.DistributedVirtualPortgroup):
            switch = inventory.switch_uuid(row.get("config.distributedVirtualSwitch"))
        out.append((nic, row, switch))
    return out


# ---------------------------------------------------------------- create / delete


def create_vm(inventory: Inventory, spec: VMSpec, job: Job, files: object | None = None) -> VMSummary:
    """Everything is checked and resolved first; only then is CreateVM_Task started.

    ``files`` is the driver, through which local disk images are uploaded.
    """
    check_spec(spec)
    host = node_host(inventory, spec.node)
    storage = next((d.storage for d in spec.disks if d.storage), None)
    datastore = inventory.datastore(storage, host)
    images_on = {split_datastore_path(d.image)[0] for d in spec.disks if d.image and d.image.startswith("[")}
    for other in {d.storage for d in spec.disks if d.storage and d.storage != storage} | images_on:
        if other is not None:  # every disk's datastore (and an image's) must exist, before any task
            inventory.datastore(other, host)
    ds_name = unescape_name(datastore.get("name", ""))
    networks = resolve_networks(inventory, host, spec.nics)
    pool = inventory.resource_pool(host)
    folder = inventory.datacenter().get("vmFolder")
    vm_dir = datastore_path(ds_name, escape_name(spec.name))
    dir_existed = path_exists(inventory, datastore, vm_dir, job)
    import_dir: str | None = None
    started: list[Any] = []
    what = f"creating VM {spec.name!r}"
    try:
        ref = None
        if files is not None and _by_lease(files, spec):
            ref = _create_by_lease(inventory, files, spec, ds_name, networks, pool, folder, host,
                                   job)
        if ref is None:
            if files is not None:
                disks, import_dir = upload_images(files, spec.disks, ds_name, job)
                spec = evolve(spec, disks=disks)
            config = config_spec(spec, ds_name, networks)
            job.progress(5.0, f"creating {spec.name}")
            ref = run_task(
                inventory.collector,
                lambda: folder.CreateVM_Task(config=config, pool=pool, host=host.ref),
                job,
                what,
                started,
            )
    except BaseException as exc:  # undo what was made; the original error is the one raised
        if not isinstance(exc, TaskFailed):  # timed out or cancelled: the task may still run
            with noting(exc, "waiting for the create task to end"):
                settle(inventory.collector, started, what)
        cleanup = cleanup_job(what)
        with noting(exc, f"removing the half-made VM {spec.name!r}"):
            remove_leftover(inventory, spec.name, cleanup)
        if not dir_existed:
            with noting(exc, f"removing {vm_dir}"):
                remove_path(inventory, vm_dir, cleanup)
        if import_dir is not None:
            with noting(exc, f"removing the uploaded images in {import_dir}"):
                remove_path(inventory, datastore_path(ds_name, import_dir), cleanup)
        raise
    return summary_of(inventory, ref)


def _by_lease(files: Any, spec: VMSpec) -> bool:
    """Local images go through an import lease (only their data is sent) unless this
    connection found that its host keeps nothing a lease receives."""
    return bool(getattr(files, "nfc_keeps_uploads", True)) and any(
        is_local_image(d) for d in spec.disks)


def _create_by_lease(inventory: Inventory, files: Any, spec: VMSpec, ds_name: str,
                     networks: Any, pool: Any, folder: Any, host: HostRow, job: Job) -> Any:
    """The VM made by ImportVApp with its images streamed in; None when the host turned out
    to discard what the lease received (the VM it made is removed again, and the caller
    imports through the datastore instead)."""
    blank, images = nfc_import.blank_disks(spec, job)
    config = config_spec(blank, ds_name, networks)
    sizes = [d.size_bytes or 0 for d in blank.disks]
    job.progress(5.0, f"creating {spec.name} by import")
    try:
        return nfc_import.import_vm(files, config, pool, folder, host.ref, images, sizes,
                                    job.span(5.0, 100.0))
    except nfc_import.DiscardedUpload:
        files.nfc_keeps_uploads = False  # for this connection: its host keeps nothing sent so
        remove_leftover(inventory, spec.name, cleanup_job(f"undoing the import of {spec.name!r}"))
        return None


def path_exists(inventory: Inventory, datastore: Props, path: str, job: Job) -> bool:
    """Whether a datastore path exists, asked through the datastore browser."""
    browser = inventory.collector.one(
        datastore.ref, vim.Datastore, ("browser",), what="reading a datastore browser"
    )
    if browser is None or browser.get("browser") is None:
        return False
    ref = browser.get("browser")
    try:
        run_task(
            inventory.collector,
            lambda: ref.SearchDatastore_Task(path, vim.host.DatastoreBrowser.SearchSpec()),
            job,
            f"looking for {path}",
        )
    except (NotFound, TaskFailed):
        return False
    return True


def remove_leftover(inventory: Inventory, name: str, job: Job) -> None:
    """After a failed create or clone: destroy a half-made VM of that name, if one appeared."""
    for vm in inventory.list_vms():
        if vm.name == name:
            try:
                ref = inventory.vm_ref(vm.id)
                run_task(inventory.collector, ref.Destroy_Task, job, f"removing the half-made {name!r}")
            except AnyvirtError:
                continue  # the original failure is what the caller must see


def summary_of(inventory: Inventory, ref: Any) -> VMSummary:
    props = inventory.collector.one(ref, vim.VirtualMachine, VM_PATHS, what="reading the new VM")
    summary = vm_summary(props) if props is not None else None
    if summary is None:
        raise InvalidState("the new VM vanished right after it was made")
    return summary


def import_folders(inventory: Inventory, vm_id: str) -> list[str]:
    """The ``anyvirt-import-*`` folders a VM made from local images keeps its disks in."""
    from anyvirt_vsphere.image_import import IMPORT_PREFIX

    folders = set()
    for disk in vm_info(inventory, vm_id).disks:
        datastore, _, rel = (disk.path or "").partition("] ")
        top = rel.split("/", 1)[0]
        if datastore.startswith("[") and top.startswith(IMPORT_PREFIX) and "/" in rel:
            folders.add(f"{datastore}] {top}")
    return sorted(folders)


def delete_vm(inventory: Inventory, vm_id: str, disks: bool, job: Job) -> None:
    """With disks: Destroy_Task (files go too). Without: UnregisterVM, the files stay on the datastore."""
    ref = inventory.vm_ref(vm_id)
    if disks:
        imported = import_folders(inventory, vm_id)
        run_task(inventory.collector, ref.Destroy_Task, job, f"deleting VM {vm_id}")
        for folder in imported:  # Destroy_Task removes the disks, not the folder they came in
            remove_path(inventory, folder, job)
    else:
        inventory.session.call(ref.UnregisterVM, f"unregistering VM {vm_id}", read=False)


# ---------------------------------------------------------------- detail


def vm_info(inventory: Inventory, vm_id: str) -> VMInfo:
    props = inventory.vm_props(vm_id, INFO_PATHS)
    summary = vm_summary(props)
    if summary is None:
        raise InvalidState(f"VM {vm_id} has no configuration yet")
    devices = list(props.get("config.hardware.device") or ())
    disks, nics = _devices(inventory, devices)
    firmware = Firmware.EFI if props.get("config.firmware") == "efi" else Firmware.BIOS
    return VMInfo(
        id=summary.id,
        name=summary.name,
        state=summary.state,
        raw_state=summary.raw_state,
        cpus=summary.cpus,
        memory_mib=summary.memory_mib,
        node=summary.node,
        firmware=firmware,
        guest_os=guest_name(props.get("config.guestId")),
        description=str(props.get("config.annotation") or ""),
        disks=tuple(disks),
        nics=tuple(nics),
        template=summary.template,
        extra={
            "moref": props.moid,
            "guest_id": props.get("config.guestId"),
            "tools": str(props.get("guest.toolsRunningStatus") or ""),
        },
    )


def disk_devices(devices: list[Any]) -> dict[str, tuple[str, Any]]:
    """The VM's VirtualDisk devices and their bus, by anyvirt's disk id ("scsi0:1": bus,
    controller number, unit)."""
    controllers: dict[int, tuple[str, int]] = {}
    for dev in devices:
        if isinstance(dev, vim.vm.device.VirtualSCSIController):
            controllers[dev.key] = ("scsi", dev.busNumber)
        elif isinstance(dev, vim.vm.device.VirtualSATAController):
            controllers[dev.key] = ("sata", dev.busNumber)
        elif isinstance(dev, vim.vm.device.VirtualIDEController):
            controllers[dev.key] = ("ide", dev.busNumber)
        elif isinstance(dev, vim.vm.device.VirtualNVMEController):
            controllers[dev.key] = ("nvme", dev.busNumber)
    out: dict[str, tuple[str, Any]] = {}
    for dev in devices:
        if isinstance(dev, vim.vm.device.VirtualDisk):
            bus, number = controllers.get(dev.controllerKey, ("scsi", 0))
            out[f"{bus}{number}:{dev.unitNumber}"] = (bus, dev)
    return out


def _devices(inventory: Inventory, devices: list[Any]) -> tuple[list[DiskInfo], list[NicInfo]]:
    disks: list[DiskInfo] = []
    nics: list[NicInfo] = []
    portgroups: dict[str, str] | None = None
    for disk_id, (bus, dev) in disk_devices(devices).items():
        backing = dev.backing
        path = getattr(backing, "fileName", None) or None
        parent = getattr(backing, "parent", None)
        size = dev.capacityInBytes or (dev.capacityInKB or 0) * 1024 or None
        disks.append(
            DiskInfo(
                id=disk_id,
                size_bytes=size,
                path=path,
                format="vmdk",
                bus=bus,
                storage=split_datastore_path(path or "")[0],
                backing=getattr(parent, "fileName", None) if parent is not None else None,
            )
        )
    for dev in devices:
        if isinstance(dev, vim.vm.device.VirtualEthernetCard):
            backing = dev.backing
            network: str | None = None
            if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
                network = unescape_name(backing.deviceName or "") or None
            elif isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
                if portgroups is None:
                    portgroups = {
                        str(r.get("key")): unescape_name(r.get("name", ""))
                        for r in inventory.networks()
                        if r.get("key") is not None
                    }
                network = portgroups.get(str(backing.port.portgroupKey), backing.port.portgroupKey)
            model = type(dev).__name__.rsplit(".", 1)[-1].removeprefix("Virtual").lower()
            nics.append(
                NicInfo(
                    id=str(dev.key),
                    network=network,
                    mac=(dev.macAddress or "").lower() or None,
                    model=model,
                )
            )
    return disks, nics


# ---------------------------------------------------------------- reconfigure


def reconfigure_vm(
    inventory: Inventory, vm_id: str, cpus: int | None, memory_mib: int | None, job: Job
) -> bool:
    """Returns True when applied to a running VM (CPU/memory hot-add), False when powered off."""
    props = inventory.vm_props(vm_id, ("runtime.powerState",))
    # the gate has checked that a running VM takes the change (hot-add) and that it fits its node
    running = props.get("runtime.powerState") == "poweredOn"
    spec = vim.vm.ConfigSpec()
    if cpus is not None:
        spec.numCPUs = cpus
    if memory_mib is not None:
        spec.memoryMB = memory_mib
    run_task(
        inventory.collector,
        lambda: props.ref.ReconfigVM_Task(spec=spec),
        job,
        f"reconfiguring VM {vm_id}",
    )
    return bool(running)


def running_takes(inventory: Inventory, vm_id: str) -> frozenset[str]:
    """What a running VM takes: CPUs with CPU hot-add on, memory with memory hot-add on."""
    props = inventory.vm_props(vm_id, ("config.cpuHotAddEnabled", "config.memoryHotAddEnabled"))
    return frozenset(field for field, on in (("cpus", props.get("config.cpuHotAddEnabled")),
                                             ("memory_mib", props.get("config.memoryHotAddEnabled")))
                     if on)
