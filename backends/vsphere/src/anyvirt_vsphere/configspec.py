"""Turning a VMSpec into a vSphere ``VirtualMachineConfigSpec``.

Every VM gets one paravirtual SCSI controller, plus an AHCI (SATA) or NVMe
controller when a disk asks for that bus; IDE disks go on the two IDE
controllers every vSphere VM has (keys 200 and 201). ``virtio`` disks, from
portable specs, are SCSI here (the paravirtual bus of this platform). Blank
disks are thin VMDKs created in the VM's folder; NICs are VMXNET3 (or the model asked for) on a
standard port group or a distributed port group. Device keys are negative, as
vSphere requires for devices added in the same spec, so disks can point at
the controller before it exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anyvirt.errors import InvalidSpec
from anyvirt.model import DiskSpec, Firmware, NicSpec, VMSpec
from anyvirt_vsphere.collector import Props
from anyvirt_vsphere.inventory import datastore_path, escape_name, stored_name, unescape_name
from anyvirt_vsphere.sdk import vim

CONTROLLER_KEY = -100
SATA_CONTROLLER_KEY = -101
NVME_CONTROLLER_KEY = -102
IDE_CONTROLLER_KEYS = (200, 201)  # present in every vSphere VM, two units each
SCSI_RESERVED_UNIT = 7  # the controller's own unit number on the bus
MAX_SCSI_DISKS = 15
#: how many disks one VM can have on each bus with the controllers made here
MAX_DISKS = {"scsi": MAX_SCSI_DISKS, "sata": 30, "nvme": 15, "ide": 4}


def vsphere_bus(bus: str | None) -> str:
    """The bus a DiskSpec's ``bus`` becomes here: virtio (and no choice) is SCSI."""
    return "scsi" if bus in (None, "scsi", "virtio") else str(bus)

#: anyvirt's portable guest names -> vSphere guestId. Names already ending in
#: "Guest" are vSphere ids and pass through unchanged.
GUEST_IDS = {
    "other": "otherGuest64",
    "other32": "otherGuest",
    "linux": "otherLinux64Guest",
    "linux32": "otherLinuxGuest",
    "debian": "debian11_64Guest",
    "ubuntu": "ubuntu64Guest",
    "centos": "centos8_64Guest",
    "rhel": "rhel8_64Guest",
    "fedora": "fedora64Guest",
    "windows": "windows9_64Guest",
    "windows-server": "windows2019srv_64Guest",
    "freebsd": "freebsd12_64Guest",
}
#: the reverse, for VMInfo.guest_os
GUEST_NAMES = {v: k for k, v in GUEST_IDS.items()}

NIC_MODELS: dict[str, type] = {
    "vmxnet3": vim.vm.device.VirtualVmxnet3,
    "e1000": vim.vm.device.VirtualE1000,
    "e1000e": vim.vm.device.VirtualE1000e,
    "virtio": vim.vm.device.VirtualVmxnet3,  # the paravirtual NIC of this platform
}


def guest_id(guest_os: str) -> str:
    if guest_os.endswith("Guest"):
        return guest_os
    try:
        return GUEST_IDS[guest_os.lower()]
    except KeyError:
        known = ", ".join(sorted(GUEST_IDS))
        raise InvalidSpec(f"unknown guest_os {guest_os!r}: use one of {known} or a vSphere guestId") from None


def guest_name(guest: str | None) -> str:
    if not guest:
        return "other"
    return GUEST_NAMES.get(guest, guest)


def check_spec(spec: VMSpec) -> None:
    """Refuse what this backend cannot build, before anything is sent."""
    stored_name(spec.name, "VM name")
    guest_id(spec.guest_os)
    for bus, limit in MAX_DISKS.items():
        count = sum(1 for d in spec.disks if vsphere_bus(d.bus) == bus)
        if count > limit:
            raise InvalidSpec(f"{count} {bus} disks asked for; at most {limit} fit on a vSphere VM here")
    for disk in spec.disks:
        if vsphere_bus(disk.bus) not in MAX_DISKS:
            raise InvalidSpec(f"disk bus {disk.bus!r}: vSphere disks go on {', '.join(MAX_DISKS)}")
        if disk.image is not None and disk.image.startswith("[") and not disk.image.endswith(".vmdk"):
            raise InvalidSpec(
                f"disk image {disk.image!r}: a datastore image must be a VMDK descriptor, "
                "'[datastore] folder/disk.vmdk'"
            )
    for nic in spec.nics:
        if nic.model is not None and nic.model.lower() not in NIC_MODELS:
            raise InvalidSpec(f"NIC model {nic.model!r} is not one of {', '.join(NIC_MODELS)}")
        if nic.mac is not None and not is_static_vmware_mac(nic.mac):
            raise InvalidSpec(
                f"MAC address {nic.mac}: vSphere accepts a manually set MAC only in its static "
                "range 00:50:56:00:00:00 to 00:50:56:3f:ff:ff; leave mac unset for a generated one"
            )


#: VMware's block for manually set MACs, 00:50:56:00:00:00 to 00:50:56:3f:ff:ff, as prefixes
STATIC_MAC_PREFIXES = ("00:50:56:0", "00:50:56:1", "00:50:56:2", "00:50:56:3")


def is_static_vmware_mac(mac: str) -> bool:
    """Whether vSphere accepts ``mac`` as a manual address."""
    return mac.lower().startswith(STATIC_MAC_PREFIXES)


def config_spec(
    spec: VMSpec,
    datastore: str,
    networks: Sequence[tuple[NicSpec, Props, str | None]],
) -> Any:
    """The ConfigSpec for CreateVM_Task. ``networks`` pairs each NIC with its
    network row and, for distributed port groups, the switch UUID."""
    changes: list[Any] = [_controller()]
    buses = {vsphere_bus(d.bus) for d in spec.disks}
    if "sata" in buses:
        changes.append(_add(vim.vm.device.VirtualAHCIController(key=SATA_CONTROLLER_KEY, busNumber=0)))
    if "nvme" in buses:
        changes.append(_add(vim.vm.device.VirtualNVMEController(key=NVME_CONTROLLER_KEY, busNumber=0)))
    next_unit = {"scsi": 0, "sata": 0, "nvme": 0, "ide": 0}
    for index, disk in enumerate(spec.disks):
        bus = vsphere_bus(disk.bus)
        unit = next_unit[bus]
        if bus == "scsi" and unit == SCSI_RESERVED_UNIT:
            unit += 1
        next_unit[bus] = unit + 1
        if bus == "ide":  # two units on each of the two built-in controllers
            controller, unit = IDE_CONTROLLER_KEYS[unit // 2], unit % 2
        else:
            controller = {"scsi": CONTROLLER_KEY, "sata": SATA_CONTROLLER_KEY}.get(bus, NVME_CONTROLLER_KEY)
        changes.append(_disk(disk, datastore, controller, unit, key=-(200 + index)))
    for index, (nic, network, switch_uuid) in enumerate(networks):
        changes.append(_nic(nic, network, switch_uuid, key=-(300 + index)))
    return vim.vm.ConfigSpec(
        name=escape_name(spec.name),
        guestId=guest_id(spec.guest_os),
        numCPUs=spec.cpus,
        memoryMB=spec.memory_mib,
        annotation=spec.description,
        firmware="efi" if spec.firmware is Firmware.EFI else "bios",
        files=vim.vm.FileInfo(vmPathName=datastore_path(datastore)),
        deviceChange=changes,
    )


def _controller() -> Any:
    controller = vim.vm.device.ParaVirtualSCSIController(
        key=CONTROLLER_KEY,
        busNumber=0,
        sharedBus=vim.vm.device.VirtualSCSIController.Sharing.noSharing,
    )
    return _add(controller)


def _add(device: Any) -> Any:
    return vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=device
    )


def _disk(disk: DiskSpec, datastore: str, controller: int, unit: int, key: int) -> Any:
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        diskMode="persistent",
        thinProvisioned=True,
        fileName=disk.image if disk.image is not None else datastore_path(disk.storage or datastore),
    )
    device = vim.vm.device.VirtualDisk(
        key=key, controllerKey=controller, unitNumber=unit, backing=backing
    )
    if disk.size_bytes is not None:
        device.capacityInKB = disk.size_bytes // 1024
        device.capacityInBytes = disk.size_bytes
    change = vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=device
    )
    if disk.image is None:
        change.fileOperation = vim.vm.device.VirtualDeviceSpec.FileOperation.create
    return change


def _nic(nic: NicSpec, network: Props, switch_uuid: str | None, key: int) -> Any:
    model = NIC_MODELS[(nic.model or "vmxnet3").lower()]
    if isinstance(network.ref, vim.dvs.DistributedVirtualPortgroup):
        backing: Any = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(switchUuid=switch_uuid, portgroupKey=str(network.get("key")))
        )
    else:
        backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=unescape_name(network.get("name", "")), network=network.ref
        )
    device = model(key=key, backing=backing)
    device.connectable = vim.vm.device.VirtualDevice.ConnectInfo(
        startConnected=True, allowGuestControl=True, connected=False
    )
    if nic.mac:
        device.addressType = "manual"
        device.macAddress = nic.mac
    else:
        device.addressType = "generated"
    return vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=device
    )
