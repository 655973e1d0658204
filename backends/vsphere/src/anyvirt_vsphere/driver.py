"""The vSphere driver: ESXi hosts and vCenter clusters behind anyvirt's SPI.

``vsphere://user@vcenter[:port]`` and ``esxi://root@esx1``; options
``?verify=false``, ``?ca=/path/ca.pem``, ``?timeout=seconds``,
``?datacenter=name`` and ``?cluster=name`` (scope listings and placement).
This class only wires the SPI to the modules that do the work.

Capabilities depend on the endpoint: a standalone ESXi host has one node and
no vCenter services (no clone, no templates, no migration); a vCenter has
them all. vSphere has no pause. Graceful stop and reboot need VMware Tools in
the guest and raise ``InvalidState`` without them; reboot is withdrawn on a
server that lacks ``RebootGuest`` (vcsim 0.24.2, recognised by its
``vcsim.server.url`` setting).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pyVmomi import vim

from anyvirt.addresses import ReportedAddress
from anyvirt.deployment import ResolvedIdentity
from anyvirt.driver import Driver
from anyvirt.errors import InvalidSpec
from anyvirt.extensions import Extension
from anyvirt.kit import qemu_img
from anyvirt.kit.changes import ChangeSource
from anyvirt.kit.extent_digest import RangeDigest
from anyvirt.model import (
    Capability,
    ExportedDisk,
    Firmware,
    HostInfo,
    MigrationResult,
    NodeInfo,
    Placement,
    PowerAction,
    RecoveryCandidate,
    SnapshotInfo,
    VMInfo,
    VMSpec,
    VMSummary,
    check_name,
)
from anyvirt.target import Target
from anyvirt.tasks import Job
from anyvirt_vsphere import (
    changes,
    clone,
    export,
    guest,
    image_import,
    migration,
    power,
    recovery,
    rules,
    snapshots,
    updates,
    vms,
)
from anyvirt_vsphere.collector import Collector
from anyvirt_vsphere.configspec import STATIC_MAC_PREFIXES
from anyvirt_vsphere.inventory import VM_PATHS, Inventory, unescape_name, vm_summary
from anyvirt_vsphere.session import Session

COMMON = frozenset(
    {
        Capability.VM_CREATE,
        Capability.VM_DELETE,
        Capability.DELETE_KEEP_DISKS,
        Capability.START,
        Capability.STOP,
        Capability.POWER_OFF,
        Capability.REBOOT,
        Capability.RESET,
        Capability.SUSPEND,
        Capability.RECONFIGURE,
        Capability.SNAPSHOTS,
        Capability.MEMORY_SNAPSHOTS,
        Capability.TASK_CANCEL,
        Capability.MAINTENANCE_MODE,
        Capability.DISK_EXPORT,
        Capability.SNAPSHOT_DISK_EXPORT,
        Capability.VM_CREATE_FROM_IMAGE,
        Capability.IDENTITY,
        Capability.IDENTITY_USER_DATA,
        Capability.GUEST_ADDRESSES,
        # CBT, written to the API; vcsim has no QueryChangedDiskAreas: a full read there
        Capability.CHANGED_BLOCKS,
    }
)
VCENTER_ONLY = frozenset(
    {
        Capability.FULL_CLONE,
        Capability.LINKED_CLONE,
        Capability.CLONE_RUNNING,
        Capability.TEMPLATES,
        Capability.TEMPLATE_TO_VM,
        Capability.LINKED_CLONE_OF_TEMPLATE,
        Capability.COLD_MIGRATION,
        Capability.LIVE_MIGRATION,
        Capability.COLD_MIGRATION_SNAPSHOTS,
        Capability.LIVE_MIGRATION_SNAPSHOTS,
        Capability.NODE_RECOVERY,
        Capability.NODE_RECOVERY_RESTART,
    }
)


def _reads_from(backing: Any, paths: set[str]) -> bool:
    """Whether a disk's backing chain (a linked clone's parents) reaches one of ``paths``."""
    parent = getattr(backing, "parent", None)
    while parent is not None:
        if getattr(parent, "fileName", None) in paths:
            return True
        parent = getattr(parent, "parent", None)
    return False


class VSphereExtensions(Extension):
    """vSphere's own operations (``host.extension(VSphereExtensions)``), through the gate."""

    def create_folder(self, name: str, *, wait: bool = True,
                      timeout: float | None = 600.0) -> Any:
        """Make a VM folder in the datacenter (a ``clone(..., folder=)`` target); returns
        its name, or a Task of it with ``wait=False``."""
        check_name(name, "folder name")
        driver = self.host.driver
        assert isinstance(driver, VSphereDriver)
        return self._through_gate(f"create folder {name}",
                                  lambda job: clone.create_folder(driver.inventory, name),
                                  capability=Capability.FULL_CLONE, wait=wait, timeout=timeout)


class VSphereDriver(Driver):
    backend: ClassVar[str] = "vsphere"
    platform: ClassVar[str] = "VMware vSphere (vCenter, ESXi)"
    possible_capabilities: ClassVar[frozenset[Capability]] = COMMON | VCENTER_ONLY
    capability_conditions: ClassVar[Mapping[Capability, str]] = {
        **dict.fromkeys(VCENTER_ONLY, "vCenter (not a standalone ESXi host)"),
        Capability.VM_CREATE_FROM_IMAGE: qemu_img.CONDITION,
        Capability.REBOOT: "a real ESXi or vCenter (the vcsim simulator has no RebootGuest)",
    }
    firmware_support: ClassVar[frozenset[Firmware]] = frozenset({Firmware.BIOS, Firmware.EFI})
    disk_buses: ClassVar[tuple[str, ...]] = ("scsi", "sata", "nvme", "ide")
    nic_models: ClassVar[tuple[str, ...]] = ("vmxnet3", "e1000e", "e1000")
    #: vSphere accepts a manual MAC only in VMware's static block, 00:50:56:00:00:00 to
    #: 00:50:56:3f:ff:ff (its own generated ones, 00:50:56:80 and up, are refused as manual)
    mac_prefixes: ClassVar[tuple[str, ...] | None] = STATIC_MAC_PREFIXES
    placement_options: ClassVar[frozenset[str]] = frozenset({"storage", "folder"})
    #: without DRS there is no scheduler to ask: the gate names the least-loaded host
    schedules_vms: ClassVar[bool] = False
    #: vSphere refuses one VM with more vCPUs than its host's logical CPUs or more memory
    bounds_vm_by_node: ClassVar[bool] = True
    uri_options: ClassVar[frozenset[str]] = frozenset({"datacenter", "cluster"})
    extensions: ClassVar[tuple[type[Extension], ...]] = (VSphereExtensions,)

    def __init__(self, target: Target, session: Session) -> None:
        self.target = target
        self.session = session
        self.collector = Collector(session)
        self.inventory = Inventory(self.collector, target)
        # local images go in through an import lease, sending only their data; cleared
        # when this host proves to keep nothing a lease receives (stock vcsim)
        self.nfc_keeps_uploads = True
        self._capabilities = self._detect_capabilities()

    # ---------------------------------------------------------- connection
    @classmethod
    def open(cls, target: Target) -> VSphereDriver:
        if not target.host:
            raise InvalidSpec(f"{target.scheme}:// needs a host name, e.g. {target.scheme}://user@host")
        if target.transport not in ("", "http"):
            raise InvalidSpec(
                f"{target.scheme}://: unknown transport {target.transport!r}; "
                f"use {target.backend}:// (HTTPS) or {target.backend}+http:// (plain HTTP, test servers only)"
            )
        session = Session(target).open()
        try:
            driver = cls(target, session)
            driver.inventory.datacenter()  # a named datacenter that is absent fails here
            driver.inventory.check_cluster()  # and so does a named cluster
        except BaseException:
            session.close()
            raise
        return driver

    @property
    def safe_uri(self) -> str:
        return self.target.safe_uri

    def close(self) -> None:
        self.collector.forget_views()
        self.session.close()

    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    def _detect_capabilities(self) -> frozenset[Capability]:
        caps = set(COMMON)
        if self.session.is_vcenter:
            caps |= VCENTER_ONLY
        if not qemu_img.available():
            caps.discard(Capability.VM_CREATE_FROM_IMAGE)  # local images are converted with it
        if self._is_simulator():
            caps.discard(Capability.REBOOT)  # vcsim 0.24.2 has no RebootGuest method
        return frozenset(caps)

    def _is_simulator(self) -> bool:
        manager = self.session.content.setting
        if manager is None:
            return False
        try:
            found = self.session.call(
                lambda: manager.QueryView("vcsim.server.url"), "reading settings", read=True
            )
        except Exception:
            return False
        return bool(found)

    @property
    def native(self) -> Any:
        return self.session.service_instance

    # ---------------------------------------------------------- host and nodes
    def host_info(self) -> HostInfo:
        about = self.session.content.about
        nodes = self.list_nodes()
        networks = sorted({unescape_name(r.get("name", "")) for r in self.inventory.networks()})
        return HostInfo(
            name=self.target.host,
            backend=self.backend,
            hypervisor="vCenter" if self.session.is_vcenter else "ESXi",
            hypervisor_version=str(about.version),
            cpus=sum(n.cpus for n in nodes),
            memory_mib=sum(n.memory_mib for n in nodes),
            free_memory_mib=sum(n.free_memory_mib or 0 for n in nodes),
            storage=tuple(self.inventory.storage_info()),
            networks=tuple(networks),
            nodes=len(nodes),
            extra={
                "full_name": str(about.fullName),
                "api_version": str(about.apiVersion),
                "instance_uuid": str(about.instanceUuid or ""),
                "datacenter": unescape_name(self.inventory.datacenter().get("name", "")),
            },
        )

    def list_nodes(self) -> list[NodeInfo]:
        return [row.node for row in self.inventory.hosts()]

    # ---------------------------------------------------------- VMs
    def list_vms(self) -> list[VMSummary]:
        return self.inventory.list_vms()

    def change_source(self, interval: float | None = None) -> ChangeSource:
        """``WaitForUpdatesEx`` on a session of the watch's own: one long poll, no polling."""
        return updates.PropertyUpdates(self.target)

    def vm_info(self, vm_id: str) -> VMInfo:
        return vms.vm_info(self.inventory, vm_id)

    def vm_summary(self, vm_id: str) -> VMSummary:
        props = self.inventory.vm_props(vm_id, VM_PATHS)
        summary = vm_summary(props)
        if summary is None:
            return super().vm_summary(vm_id)
        return summary

    def native_vm(self, vm_id: str) -> Any:
        return self.inventory.vm_ref(vm_id)

    @classmethod
    def check_vm_name(cls, name: str, what: str = "name") -> None:
        rules.check_vm_name(name, what)

    @classmethod
    def check_storage_name(cls, name: str, what: str = "storage") -> None:
        rules.check_storage_name(name, what)

    def check_image(self, image: str, format: str | None = None) -> None:
        if rules.is_datastore_path(image):
            # a disk already on the platform: it must stay inside its datastore; create_vm
            # checks that it exists
            rules.check_datastore_path(image)
            if format not in (None, "vmdk"):
                raise InvalidSpec(f"disk image {image!r} is on a datastore, so a VMDK; "
                                  f"format {format!r} does not describe it")
        else:
            super().check_image(image, format)
            image_import.check_local_image(image, format=format)  # refused before anything is made

    def create_vm(self, spec: VMSpec, job: Job) -> VMSummary:
        return vms.create_vm(self.inventory, spec, job, files=self)

    def delete_vm(self, vm_id: str, disks: bool, job: Job) -> None:
        vms.delete_vm(self.inventory, vm_id, disks, job)

    # ---------------------------------------------------------- deployment
    def apply_identity(self, vm_id: str, identity: ResolvedIdentity, job: Job) -> None:
        guest.apply_identity(self.inventory, vm_id, identity, job)

    def read_identity(self, vm_id: str) -> dict[str, str] | None:
        return guest.read_identity(self.inventory, vm_id)

    def guest_addresses(self, vm_id: str) -> list[ReportedAddress]:
        return guest.guest_addresses(self.inventory, vm_id)

    def guest_reports_up(self, vm_id: str) -> bool | None:
        return guest.guest_reports_up(self.inventory, vm_id)

    def power(self, vm_id: str, action: PowerAction, job: Job) -> None:
        power.power(self.inventory, vm_id, action, job)

    def reconfigure_vm(self, vm_id: str, cpus: int | None, memory_mib: int | None, job: Job) -> bool:
        return vms.reconfigure_vm(self.inventory, vm_id, cpus, memory_mib, job)

    def running_takes(self, vm_id: str) -> frozenset[str]:
        return vms.running_takes(self.inventory, vm_id)

    # ---------------------------------------------------------- snapshots
    def list_snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        return snapshots.list_snapshots(self.inventory, vm_id)

    def create_snapshot(
        self,
        vm_id: str,
        name: str,
        description: str,
        memory: bool,
        job: Job,
    ) -> SnapshotInfo:
        return snapshots.create_snapshot(self.inventory, vm_id, name, description, memory, job)

    def revert_snapshot(self, vm_id: str, snapshot_id: str, job: Job) -> None:
        snapshots.revert_snapshot(self.inventory, vm_id, snapshot_id, job)

    def delete_snapshot(self, vm_id: str, snapshot_id: str, children: bool, job: Job) -> None:
        snapshots.delete_snapshot(self.inventory, vm_id, snapshot_id, children, job)

    # ---------------------------------------------------------- clone, migrate
    def why_not(self, capability: Capability) -> str:
        if capability in (Capability.NODE_RECOVERY, Capability.NODE_RECOVERY_RESTART) \
                and not self.session.is_vcenter:
            return ("an ESXi connection is the host itself: recover its VMs through its "
                    "vCenter, or with anyvirt.recover(failed=...)")
        if capability in VCENTER_ONLY and not self.session.is_vcenter:
            return "a standalone ESXi host cannot do this; connect to its vCenter"
        if capability is Capability.CONSOLE:
            return ("vSphere reaches a VM's serial port only through a network serial port (a "
                    "virtual serial port concentrator, or a telnet URI on an ESXi host with its "
                    "firewall opened) that anyvirt does not set up, and the WebMKS console is "
                    "graphical, not a serial line")
        return ""

    def clone_vm(self, vm_id: str, name: str, linked: bool, placement: Placement,
                 job: Job) -> VMSummary:
        return clone.clone_vm(self.inventory, vm_id, name, linked, placement.node, job,
                              datastore=placement.storage, folder=placement.folder)

    def clone_vms(self, vm_id: str, names: Sequence[str], linked: bool, placement: Placement,
                  job: Job) -> list[VMSummary]:
        return clone.clone_many(self.inventory, vm_id, names, linked, placement.node, job,
                                datastore=placement.storage, folder=placement.folder)

    def linked_clones(self, vm_id: str) -> list[str]:
        mine = {d.path for d in self.vm_info(vm_id).disks if d.path}
        rows = self.collector.scan(
            {vim.VirtualMachine: ("name", "config.hardware.device", "config.instanceUuid",
                                  "config.extraConfig")},
            root=self.inventory.scope(), what="finding linked clones")
        users = []
        for row in rows:
            if row.get("config.instanceUuid") == vm_id:
                continue
            marked = any(o.key == clone.LINKED_FROM_KEY and o.value == vm_id
                         for o in row.get("config.extraConfig") or ())
            chained = any(isinstance(dev, vim.vm.device.VirtualDisk) and _reads_from(dev.backing, mine)
                          for dev in row.get("config.hardware.device") or ())
            if marked or chained:
                users.append(unescape_name(row.get("name") or row.moid))
        return users

    def mark_template(self, vm_id: str, job: Job) -> VMSummary:
        clone.mark_as_template(self.inventory, vm_id)
        return self.vm_summary(vm_id)

    def convert_to_vm(self, vm_id: str, node: str | None, job: Job) -> VMSummary:
        clone.mark_as_vm(self.inventory, vm_id, node)
        return self.vm_summary(vm_id)

    def migrate_vm(
        self,
        vm_id: str,
        target: Driver | None,
        placement: Placement,
        live: bool,
        job: Job,
    ) -> MigrationResult:
        # the gate has checked that ``target`` is this vCenter (can_reach)
        return migration.relocate(self.inventory, vm_id, placement.node, job,
                                  datastore=placement.storage)

    def can_reach(self, other: Driver) -> bool:
        """Another connection to the same vCenter (address and port: two endpoints at one
        address are two vCenters); a move between vCenters is not supported."""
        return isinstance(other, VSphereDriver) and other._endpoint() == self._endpoint()

    def _endpoint(self) -> tuple[str, int]:
        return self.target.host.lower(), self.target.port or 443

    def set_maintenance(self, node_id: str, on: bool, job: Job) -> None:
        migration.set_maintenance(self.inventory, node_id, on, job)

    def recovery_candidates(self, node_id: str) -> list[RecoveryCandidate]:
        return recovery.candidates(self.inventory, node_id)

    def recover_vm(self, vm_id: str, node_id: str, start: bool, job: Job) -> VMSummary:
        return recovery.recover(self.inventory, vm_id, node_id, start, job)

    # ---------------------------------------------------------- changed blocks (CBT)
    def change_mark(self, vm_id: str, disk_id: str, job: Job) -> str | None:
        return changes.change_mark(self.inventory, vm_id, disk_id, job)

    def changed_extents(self, vm_id: str, disk_id: str, since: str,
                        job: Job) -> list[tuple[int, int]] | None:
        return changes.changed_extents(self.inventory, vm_id, disk_id, since, job)

    def drop_change_mark(self, vm_id: str, disk_id: str, mark: str, job: Job) -> None:
        """Change ids are no objects on vSphere: nothing to free."""

    def export_disks(self, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
        return export.export_disks(self, self.inventory, vm_id, dest_dir, job)

    def stream_disks(self, vm_id: str,
                     job: Job) -> contextlib.AbstractContextManager[list[ExportedDisk] | None]:
        return export.streamed_disks(self, self.inventory, vm_id, job)

    def digest_disk_ranges(self, vm_id: str, disk_index: int,
                           ranges: Sequence[tuple[int, int]], job: Job) -> RangeDigest | None:
        return export.digest_disk_ranges(self, self.inventory, vm_id, disk_index, ranges, job)

    def export_snapshot_disks(self, vm_id: str, snapshot_id: str, dest_dir: Path,
                              job: Job) -> list[ExportedDisk]:
        return export.export_snapshot_disks(self, self.inventory, vm_id, dest_dir, job)
