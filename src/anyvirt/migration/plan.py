"""Planning a move to another platform: map the hardware, say what will change.

The neutral description is the source's :class:`~anyvirt.model.VMInfo`; the
plan maps it onto what the target driver can express (firmware, disk bus,
NIC model, MAC) and lists every compromise as a typed warning. Anything that
makes the move impossible is raised here, before a byte is copied.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING

from attrs import frozen

from anyvirt.errors import InvalidSpec
from anyvirt.migration.networks import NetworkRule
from anyvirt.model import (
    Capability,
    DiskSpec,
    Firmware,
    NicSpec,
    VMInfo,
    VMSpec,
    check_name,
)

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.vm import VM


class WarningCode(enum.Enum):
    EFI_STATE_LOST = "efi-state-lost"
    FIRMWARE_CHANGED = "firmware-changed"
    DISK_BUS_CHANGED = "disk-bus-changed"
    NIC_MODEL_CHANGED = "nic-model-changed"
    MAC_CHANGED = "mac-changed"
    NETWORK_DEFAULTED = "network-defaulted"
    SNAPSHOTS_DROPPED = "snapshots-dropped"

    def __str__(self) -> str:
        return self.value


@frozen
class MigrationWarning:
    code: WarningCode
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


#: The image format each platform keeps imported disks in (a driver may say with
#: ``image_format``); the plan shows the conversion, qemu-img does it.
TARGET_FORMATS = {"libvirt": "qcow2", "vsphere": "vmdk (flat)", "proxmox": "raw",
                  "virtualbox": "vdi", "memory": "raw"}


@frozen
class DiskConversion:
    """One disk's way across: from what, to what, and at most how many bytes go."""

    id: str
    size_bytes: int | None
    source_format: str | None
    target_format: str
    target_bus: str | None
    bytes_to_send: int | None  # at most the virtual size; zeros are skipped where they can be


@frozen
class NetworkMapping:
    nic: str
    source: str | None
    target: str | None  # None: the target's default network
    how: str  # "same name", "mapped", "default"


@frozen
class MigrationPlan:
    """What ``anyvirt.migrate`` will do: the source, the spec it will create, the disk
    conversions, the network mapping and the warnings. Making it changes nothing."""

    source: VMInfo
    source_uri: str
    target_uri: str
    spec: VMSpec
    disk_ids: tuple[str, ...]  # source disk ids, in the order of spec.disks
    warnings: tuple[MigrationWarning, ...]
    disks: tuple[DiskConversion, ...] = ()
    networks: tuple[NetworkMapping, ...] = ()

    @property
    def warning_codes(self) -> tuple[str, ...]:
        return tuple(w.code.value for w in self.warnings)


def plan_migration(vm: VM, to: Host, *, name: str | None = None,
                   networks: Mapping[str, str] | None = None) -> MigrationPlan:
    """Plan moving ``vm`` to ``to`` (a host of any backend). Raises if it cannot be done.

    ``networks`` maps source network names to target ones (``{"*": "lan"}`` sends every
    network not named otherwise to ``lan``). A NIC whose network the target lacks and
    the map does not name is an ``InvalidSpec`` here, never a surprise half-way.
    """
    source = vm.host
    target = to
    new_name = check_name(name or vm.name, "name")
    source.require(Capability.DISK_EXPORT, "needed to copy the VM's disks out")
    info = vm.info()
    # the copy is made as a restore is: the target's restore row (capability, name, capacity)
    target.gate.check_restore(new_name, info.cpus, info.memory_mib, bool(info.disks))
    drv = target.driver
    warnings: list[MigrationWarning] = []

    firmware = info.firmware
    if firmware is Firmware.EFI:
        warnings.append(MigrationWarning(
            WarningCode.EFI_STATE_LOST,
            "UEFI variables (boot entries, Secure Boot keys) are not carried across platforms; "
            "the guest boots from the default removable-media path",
        ))
    if firmware not in drv.firmware_support:
        fallback = next(iter(sorted(drv.firmware_support, key=str)))
        warnings.append(MigrationWarning(
            WarningCode.FIRMWARE_CHANGED,
            f"{target.backend} cannot boot {firmware}; using {fallback} (the guest may not boot)",
        ))
        firmware = fallback

    disks: list[DiskSpec] = []
    conversions: list[DiskConversion] = []
    target_format = getattr(drv, "image_format", None) or TARGET_FORMATS.get(target.backend, "raw")
    for disk in info.disks:
        bus = disk.bus if disk.bus in drv.disk_buses else drv.disk_buses[0]
        if disk.bus and bus != disk.bus:
            warnings.append(MigrationWarning(
                WarningCode.DISK_BUS_CHANGED,
                f"disk {disk.id}: {disk.bus} -> {bus} (the guest needs a {bus} driver)",
            ))
        # placeholder image: the real file comes from the export at migration time
        disks.append(DiskSpec(image=disk.path or disk.id, bus=bus))
        conversions.append(DiskConversion(
            id=disk.id, size_bytes=disk.size_bytes, source_format=disk.format,
            target_format=target_format, target_bus=bus, bytes_to_send=disk.size_bytes))

    nics: list[NicSpec] = []
    mapping: list[NetworkMapping] = []
    rule = NetworkRule.for_target(target, networks)
    for nic in info.nics:
        model = nic.model if nic.model in drv.nic_models else drv.nic_models[0]
        if nic.model and model != nic.model:
            warnings.append(MigrationWarning(
                WarningCode.NIC_MODEL_CHANGED, f"NIC {nic.id}: {nic.model} -> {model}"))
        mac = nic.mac
        if mac and drv.mac_prefixes is not None and not mac.startswith(drv.mac_prefixes):
            warnings.append(MigrationWarning(
                WarningCode.MAC_CHANGED,
                f"NIC {nic.id}: {target.backend} does not accept MAC {mac}; a new one is assigned "
                "(DHCP reservations and licences bound to it must follow)",
            ))
            mac = None
        network, how = rule.place(nic.id, nic.network)
        if how == "default":
            warnings.append(MigrationWarning(
                WarningCode.NETWORK_DEFAULTED,
                f"NIC {nic.id}: it is on no named network; it joins the target's default"))
        mapping.append(NetworkMapping(nic=nic.id, source=nic.network, target=network, how=how))
        nics.append(NicSpec(network=network, model=model, mac=mac))

    if source.supports(Capability.SNAPSHOTS) and vm.snapshots.list():
        warnings.append(MigrationWarning(
            WarningCode.SNAPSHOTS_DROPPED, "only the current state moves; snapshots stay behind"))

    spec = VMSpec(
        name=new_name, cpus=info.cpus, memory_mib=info.memory_mib, disks=disks, nics=nics,
        firmware=firmware, guest_os=info.guest_os or "other", description=info.description,
    )
    if len({n.mac for n in nics if n.mac}) != len([n for n in nics if n.mac]):
        raise InvalidSpec("the source VM has two NICs with one MAC")
    return MigrationPlan(
        source=info, source_uri=source.uri, target_uri=target.uri, spec=spec,
        disk_ids=tuple(d.id for d in info.disks), warnings=tuple(warnings),
        disks=tuple(conversions), networks=tuple(mapping),
    )


def require_movable(vm: VM) -> None:
    """Cross-platform moves and backups copy disks: what the export row refuses now (a
    running VM, one being changed), asked before a prompt rather than after."""
    vm.host.gate.check("export", vm, {"what": f"copy the disks of {vm.name!r}"})


__all__ = ["DiskConversion", "MigrationPlan", "MigrationWarning", "NetworkMapping", "WarningCode",
           "plan_migration"]
