"""The Proxmox VE driver: a whole PVE cluster (or one standalone node) as one Host.

``proxmox://user%40realm@host[:8006]`` with a password, or an API token
(``?token_name=&token_value=`` or keyword arguments); ``?verify=false``,
``?ca=``, ``?timeout=``. QEMU VMs are VMs; LXC containers are listed apart
(``host.extension(ProxmoxExtensions).list_containers()``). This class wires the SPI to the modules that
do the work; capabilities come from the connection: PVE's version and
whether it is a cluster of several nodes (migration) or one node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from anyvirt.addresses import ReportedAddress
from anyvirt.deployment import ResolvedIdentity
from anyvirt.driver import Driver
from anyvirt.errors import InvalidSpec
from anyvirt.extensions import Extension
from anyvirt.kit import qemu_img
from anyvirt.kit.console import ConsoleChannel
from anyvirt.model import (
    Capability,
    ExportedDisk,
    Firmware,
    HostInfo,
    MigrationResult,
    NodeInfo,
    Overcommit,
    Placement,
    PowerAction,
    RecoveryCandidate,
    SnapshotInfo,
    VMInfo,
    VMSpec,
    VMSummary,
)
from anyvirt.target import Target
from anyvirt.tasks import Job
from anyvirt_proxmox import (
    backups,
    clone,
    console,
    guest,
    ha,
    image_import,
    migration,
    node_disks,
    node_streams,
    power,
    snapshots,
    vms,
)
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox.backups import NativeBackup
from anyvirt_proxmox.inventory import Inventory, storage_infos
from anyvirt_proxmox.session import OPTIONS, UNDO_GRACE, Session

if TYPE_CHECKING:
    from anyvirt.vm import VM

COMMON = frozenset({
    Capability.VM_CREATE, Capability.VM_DELETE, Capability.START, Capability.STOP,
    Capability.POWER_OFF, Capability.REBOOT, Capability.RESET, Capability.PAUSE, Capability.SUSPEND,
    Capability.RECONFIGURE, Capability.SNAPSHOTS, Capability.MEMORY_SNAPSHOTS, Capability.FULL_CLONE,
    Capability.CLONE_RUNNING, Capability.TASK_CANCEL, Capability.TEMPLATES,
    Capability.LINKED_CLONE_OF_TEMPLATE, Capability.IDENTITY, Capability.GUEST_ADDRESSES,
    Capability.CONSOLE,
})
#: a cluster reports what PVE's HA does of a failed node's guests (ha.py)
CLUSTER_ONLY_REPORTS = frozenset({Capability.NODE_RECOVERY})
CLUSTER_ONLY = frozenset({Capability.COLD_MIGRATION, Capability.LIVE_MIGRATION})
#: what PVE cannot do the way anyvirt means it, and why (``why_not``)
WHY_NOT: dict[Capability, str] = {
    Capability.LINKED_CLONE: "Proxmox VE makes linked clones only of templates: mark_template() "
                             "the VM first, or make a full clone",
    Capability.TEMPLATE_TO_VM: "Proxmox VE templates are one-way: no API turns one back into a VM",
    Capability.DELETE_KEEP_DISKS: "Proxmox VE destroys a VM's disks with it: delete(disks=False) "
                                  "cannot keep them",
    Capability.COLD_MIGRATION: "a standalone Proxmox VE node has no other node to move VMs to",
    Capability.LIVE_MIGRATION: "a standalone Proxmox VE node has no other node to move VMs to",
    Capability.COLD_MIGRATION_SNAPSHOTS: "Proxmox VE moves local disks with snapshots only on some "
                                         "storage types; delete the snapshots first",
    Capability.LIVE_MIGRATION_SNAPSHOTS: "Proxmox VE moves local disks with snapshots only on some "
                                         "storage types; delete the snapshots first",
    Capability.DISK_EXPORT: node_disks.WHY_NO_SSH,
    Capability.VM_CREATE_FROM_IMAGE: "disk images are uploaded as 'import' content: that needs Proxmox "
                                     "VE 8.2 or later, a storage with 'import' enabled, and qemu-img here",
    Capability.IDENTITY_USER_DATA: guest.WHY_NO_USER_DATA,
    Capability.MAINTENANCE_MODE: "Proxmox VE's node maintenance is an HA-manager command, not in its API",
    Capability.NODE_RECOVERY: "a standalone Proxmox VE node has no other node to recover onto",
    Capability.NODE_RECOVERY_RESTART: ha.WHY_NO_RESTART,
    Capability.LIVE_RECONFIGURE: "Proxmox VE applies CPU and memory changes of a running VM at its next "
                                 "start unless hotplug is set up; reconfigure() reports that",
}
DETAIL_WORKERS = 8  # bounded concurrency for per-VM detail requests


def _undo_of(vm_id: str) -> str:
    return f"the removal of VM {vm_id}, made after its caller gave up"


def parse_version(text: str) -> tuple[int, int]:
    """``"8.2.4"`` -> (8, 2); anything unreadable is (0, 0)."""
    parts = [*text.split("-")[0].split("."), "0", "0"]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return 0, 0


class ProxmoxExtensions(Extension):
    """Proxmox VE's own reads (``host.extension(ProxmoxExtensions)``), through the gate:
    each runs as a Task under its deadline, like every operation."""

    def _driver(self) -> ProxmoxDriver:
        driver = self.host.driver
        assert isinstance(driver, ProxmoxDriver)
        return driver

    def list_containers(self, *, wait: bool = True, timeout: float | None = 600.0) -> Any:
        """The cluster's LXC containers (never treated as VMs), or a Task of them."""
        inventory = self._driver().inventory
        return self._through_gate("list containers", lambda job: inventory.list_containers(),
                                  wait=wait, timeout=timeout)

    def vm_infos(self, vm_ids: Sequence[str], *, wait: bool = True,
                 timeout: float | None = 600.0) -> Any:
        """Details of many VMs (``vm.info()`` of each), at most ``DETAIL_WORKERS`` requests
        at a time, or a Task of them."""
        driver, ids = self._driver(), list(vm_ids)

        def read(job: Job) -> list[VMInfo]:
            with ThreadPoolExecutor(max_workers=DETAIL_WORKERS) as pool:
                return list(pool.map(driver.vm_info, ids))

        return self._through_gate(f"read {len(ids)} VMs", read, wait=wait, timeout=timeout)


class ProxmoxBackups(Extension):
    """Proxmox VE's own backups (``host.extension(ProxmoxBackups)``): vzdump archives in a
    PVE storage, made, listed, restored and deleted through PVE's API, each through the
    gate. They need no ``ssh=`` and restore on Proxmox only (see ``anyvirt_proxmox.backups``)."""

    def _inventory(self) -> Inventory:
        driver = self.host.driver
        assert isinstance(driver, ProxmoxDriver)
        return driver.inventory

    def backup(self, vm: VM, *, storage: str | None = None, mode: str = "snapshot",
               compress: str = "zstd", notes: str | None = None, protected: bool = False,
               wait: bool = True, timeout: float | None = 3600.0) -> Any:
        """A vzdump of ``vm`` (running or not) into ``storage`` (the node's first storage that
        takes backups by default): its :class:`NativeBackup`, or a Task of it."""
        backups.check_backup_options(storage, mode, compress, notes)
        inv = self._inventory()
        return self._through_gate(
            f"back up VM {vm.name} (vzdump)",
            lambda job: backups.backup_vm(inv, vm.id, storage, mode, compress, notes, protected, job),
            vm=vm, wait=wait, timeout=timeout)

    def backups(self, vm: VM | None = None, *, storage: str | None = None, wait: bool = True,
                timeout: float | None = 600.0) -> Any:
        """The vzdump archives of QEMU VMs (of ``vm`` only, when given), oldest first."""
        if storage is not None and not backups.STORAGE_ID.match(storage):
            raise InvalidSpec(f"storage {storage!r} is not a Proxmox VE storage id")
        inv, vm_id = self._inventory(), vm.id if vm is not None else None
        return self._through_gate("list backups", lambda job: backups.list_backups(inv, vm_id, storage),
                                  wait=wait, timeout=timeout)

    def restore(self, backup: NativeBackup | str, *, name: str | None = None, node: str | None = None,
                storage: str | None = None, unique: bool = True, wait: bool = True,
                timeout: float | None = 3600.0) -> Any:
        """A new VM from ``backup`` (a :class:`NativeBackup` or its volume id), on ``node``
        (the backup's by default), its disks on ``storage`` (the archived ones' by default),
        with new MACs and SMBIOS UUID unless ``unique=False``: the VM, or a Task of it."""
        if name is not None:
            cfg.check_vm_name(name)
        if node is not None and not cfg.DNS_NAME.match(node):
            raise InvalidSpec(f"{node!r} is not a Proxmox VE node name")
        inv, host = self._inventory(), self.host

        def work(job: Job) -> VM:
            found = backups.find_backup(inv, backup if isinstance(backup, str) else backup.volid)
            return host.vms.get(backups.restore_vm(inv, found, name, node, storage, unique, job).id)

        return self._through_gate(f"restore {backup if isinstance(backup, str) else backup.volid}",
                                  work, capability=Capability.VM_CREATE, wait=wait, timeout=timeout)

    def delete(self, backup: NativeBackup, *, wait: bool = True, timeout: float | None = 600.0) -> Any:
        """Remove a vzdump archive from its storage (PVE refuses a protected one)."""
        inv = self._inventory()
        return self._through_gate(f"delete backup {backup.volid}",
                                  lambda job: backups.delete_backup(inv, backup, job),
                                  wait=wait, timeout=timeout)


class ProxmoxDriver(Driver):
    backend: ClassVar[str] = "proxmox"
    platform: ClassVar[str] = "Proxmox VE (clusters and standalone nodes)"
    possible_capabilities: ClassVar[frozenset[Capability]] = (
        COMMON | CLUSTER_ONLY | CLUSTER_ONLY_REPORTS
        | {Capability.VM_CREATE_FROM_IMAGE, Capability.DISK_EXPORT})
    capability_conditions: ClassVar[Mapping[Capability, str]] = {
        **dict.fromkeys(CLUSTER_ONLY | CLUSTER_ONLY_REPORTS, "a cluster of two or more nodes"),
        Capability.VM_CREATE_FROM_IMAGE: (
            f"Proxmox VE {'.'.join(map(str, image_import.MIN_VERSION))} or later, a storage with "
            "'import' content enabled, and qemu-img where anyvirt runs"),
        Capability.DISK_EXPORT: ("an ssh= connection to the node (PVE's API cannot download a "
                                 "disk)"),
    }
    firmware_support: ClassVar[frozenset[Firmware]] = frozenset({Firmware.BIOS, Firmware.EFI})
    disk_buses: ClassVar[tuple[str, ...]] = ("scsi", "virtio", "sata", "ide")
    nic_models: ClassVar[tuple[str, ...]] = cfg.NIC_MODELS
    placement_options: ClassVar[frozenset[str]] = frozenset({"storage"})
    #: PVE places a VM on the node it is sent to: the gate names the least-loaded one
    schedules_vms: ClassVar[bool] = False
    extensions: ClassVar[tuple[type[Extension], ...]] = (ProxmoxExtensions, ProxmoxBackups)
    uri_options: ClassVar[frozenset[str]] = OPTIONS | node_disks.OPTIONS
    connect_options: ClassVar[frozenset[str]] = OPTIONS | node_disks.OPTIONS

    def __init__(self, target: Target, session: Session) -> None:
        self.target = target
        self.session = session
        self.node_access = node_disks.NodeAccess.from_target(target)
        self.inventory = Inventory(session)
        about = session.get(("version",), "reading the PVE version")
        self.version = str(about.get("version", "0"))
        self.repoid = str(about.get("repoid", ""))
        status = session.get(("cluster", "status"), "reading the cluster status")
        cluster = next((r for r in status if r.get("type") == "cluster"), None)
        self.cluster: str | None = str(cluster["name"]) if cluster else None
        self.node_count = sum(1 for r in status if r.get("type") == "node") or 1
        storages = session.get(("storage",), "reading the storage configuration")
        self.imports = any("import" in str(s.get("content", "")).split(",") for s in storages)
        self._capabilities = self._detect_capabilities()

    # ---------------------------------------------------------- connection
    @classmethod
    def open(cls, target: Target) -> ProxmoxDriver:
        node_disks.NodeAccess.from_target(target)  # a bad ssh= is refused before any login
        session = Session(target).open()
        try:
            return cls(target, session)
        except BaseException:
            session.close()
            raise

    @property
    def safe_uri(self) -> str:
        return self.target.safe_uri

    def close(self) -> None:
        self.session.close()

    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    def _detect_capabilities(self) -> frozenset[Capability]:
        caps = set(COMMON)
        if self.cluster is not None and self.node_count > 1:
            caps |= CLUSTER_ONLY | CLUSTER_ONLY_REPORTS  # a standalone node has nowhere to go
        if self.imports and parse_version(self.version) >= image_import.MIN_VERSION and qemu_img.available():
            caps.add(Capability.VM_CREATE_FROM_IMAGE)
        if self.node_access is not None:
            caps.add(Capability.DISK_EXPORT)  # the disks' bytes come from the node over SSH
        return frozenset(caps)

    def why_not(self, capability: Capability) -> str:
        return WHY_NOT.get(capability, "")

    @classmethod
    def check_vm_name(cls, name: str, what: str = "name") -> None:
        cfg.check_vm_name(name)

    @classmethod
    def check_snapshot_name(cls, name: str, what: str = "snapshot name") -> None:
        cfg.check_snapshot_name(name)  # at the gate: refused before the driver is asked

    @classmethod
    def check_description(cls, text: str, what: str = "description") -> None:
        cfg.check_description(text)

    def default_overcommit(self) -> Overcommit | None:
        # fakepve (the test double) reports made-up node sizes; a real PVE gets anyvirt's default
        return Overcommit.unlimited() if self.repoid == "fakepve" else None

    @property
    def native(self) -> Any:
        return self.session.native

    # ---------------------------------------------------------- host and nodes
    def host_info(self) -> HostInfo:
        rows = self.inventory.resources()
        nodes = [r for r in rows if r.get("type") == "node"]
        storages, content = storage_infos(rows)
        online = [r for r in nodes if r.get("status") == "online"]
        maxmem = sum(int(r.get("maxmem") or 0) for r in online)
        return HostInfo(
            name=self.cluster or (str(nodes[0]["node"]) if nodes else self.target.host),
            backend=self.backend, hypervisor="Proxmox VE", hypervisor_version=self.version,
            cpus=sum(int(r.get("maxcpu") or 0) for r in online), memory_mib=maxmem // (1024 * 1024),
            free_memory_mib=(maxmem - sum(int(r.get("mem") or 0) for r in online)) // (1024 * 1024),
            storage=tuple(storages), networks=tuple(self._bridges()), nodes=len(nodes),
            extra={"cluster": self.cluster, "standalone": self.cluster is None,
                   "storage_content": content,
                   "containers": sum(1 for r in rows if r.get("type") == "lxc")},
        )

    def _bridges(self) -> list[str]:
        found: set[str] = set()
        for node in self.inventory.online_nodes():
            found.update(self.inventory.bridges(node))
        return sorted(found)

    def list_nodes(self) -> list[NodeInfo]:
        return self.inventory.nodes(self.cluster, self.version)

    def recovery_candidates(self, node_id: str) -> list[RecoveryCandidate]:
        return ha.candidates(self.session, self.inventory.list_vms(), node_id)

    # ---------------------------------------------------------- VMs
    def list_vms(self) -> list[VMSummary]:
        return self.inventory.list_vms()

    def find_vm(self, ref: str) -> VMSummary:
        return self.inventory.find_vm(ref)

    def vm_summary(self, vm_id: str) -> VMSummary:
        return self.inventory.vm_summary(vm_id)

    def vm_info(self, vm_id: str) -> VMInfo:
        return vms.vm_info(self.inventory, vm_id)

    def native_vm(self, vm_id: str) -> Any:
        return self.session.native.nodes(self.inventory.node_of(vm_id)).qemu(cfg.vmid(vm_id))

    def create_vm(self, spec: VMSpec, job: Job) -> VMSummary:
        with self.session.undoable(f"creating VM {spec.name!r}"):
            summary = vms.create_vm(self.inventory, spec, job)
            self._await_undo_if_late(summary, job)
            return summary

    def _await_undo_if_late(self, summary: VMSummary, job: Job) -> None:
        """A create (or clone) that ended after its caller gave up is removed by the caller's
        side right after (the task's rollback): close() waits for that removal too."""
        if job.cancelled:
            self.session.hold_for(_undo_of(summary.id), UNDO_GRACE)

    def delete_vm(self, vm_id: str, disks: bool, job: Job) -> None:
        try:
            with self.session.undoable(f"deleting VM {vm_id}"):
                vms.delete_vm(self.inventory, vm_id, job)
        finally:
            self.session.release(_undo_of(vm_id))

    # ---------------------------------------------------------- deployment
    def apply_identity(self, vm_id: str, identity: ResolvedIdentity, job: Job) -> None:
        guest.apply_identity(self.inventory, vm_id, identity, job)

    def read_identity(self, vm_id: str) -> dict[str, str] | None:
        return guest.read_identity(self.inventory, vm_id)

    def guest_addresses(self, vm_id: str) -> list[ReportedAddress]:
        return guest.guest_addresses(self.inventory, vm_id)

    def open_console(self, vm_id: str, timeout: float) -> ConsoleChannel:
        return console.open_console(self.inventory, vm_id, timeout)

    def guest_reports_up(self, vm_id: str) -> bool | None:
        return guest.guest_reports_up(self.inventory, vm_id)

    def power(self, vm_id: str, action: PowerAction, job: Job) -> None:
        power.power(self.inventory, vm_id, action, job)

    def reconfigure_vm(self, vm_id: str, cpus: int | None, memory_mib: int | None, job: Job) -> bool:
        return vms.reconfigure_vm(self.inventory, vm_id, cpus, memory_mib, job)

    def mark_template(self, vm_id: str, job: Job) -> VMSummary:
        """One way: PVE has no API that turns a template back into a VM."""
        return vms.mark_template(self.inventory, vm_id, job)

    # ---------------------------------------------------------- snapshots
    def list_snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        return snapshots.list_snapshots(self.inventory, vm_id)

    def create_snapshot(self, vm_id: str, name: str, description: str, memory: bool,
                        job: Job) -> SnapshotInfo:
        return snapshots.create_snapshot(self.inventory, vm_id, name, description, memory, job)

    def revert_snapshot(self, vm_id: str, snapshot_id: str, job: Job) -> None:
        snapshots.revert_snapshot(self.inventory, vm_id, snapshot_id, job)

    def delete_snapshot(self, vm_id: str, snapshot_id: str, children: bool, job: Job) -> None:
        snapshots.delete_snapshot(self.inventory, vm_id, snapshot_id, children, job)

    # ---------------------------------------------------------- clone, migrate
    def can_reach(self, other: Driver) -> bool:
        """Another connection to this cluster: a move between clusters is not supported."""
        return (isinstance(other, ProxmoxDriver) and self.cluster is not None
                and other.cluster == self.cluster)

    def linked_clones(self, vm_id: str) -> list[str]:
        return clone.linked_clones(self.inventory, vm_id)

    def clone_vm(self, vm_id: str, name: str, linked: bool, placement: Placement,
                 job: Job) -> VMSummary:
        with self.session.undoable(f"cloning VM {vm_id} as {name!r}"):
            summary = clone.clone_vm(self.inventory, vm_id, name, linked, placement, job)
            self._await_undo_if_late(summary, job)
            return summary

    def migrate_vm(self, vm_id: str, target: Driver | None, placement: Placement, live: bool,
                   job: Job) -> MigrationResult:
        # the gate has checked that ``target`` is this cluster (can_reach)
        return migration.migrate(self.inventory, vm_id, placement, live, job)

    # ---------------------------------------------------------- disks out
    def export_disks(self, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
        """From the node's storage over SSH (``ssh=``): the gate has checked DISK_EXPORT, which
        only a connection with ``ssh=`` declares."""
        assert self.node_access is not None
        return node_disks.export_disks(self.inventory, self.node_access, vm_id, dest_dir, job)

    def stream_disks(self, vm_id: str,
                     job: Job) -> contextlib.AbstractContextManager[list[ExportedDisk] | None]:
        """From the node's storage over SSH as the import reads them (no staging copy); None
        without ``ssh=`` (the gate then refuses the copy, saying how) or where they cannot
        stream (then they are copied)."""
        if self.node_access is None:
            return contextlib.nullcontext(None)
        return node_streams.streamed_disks(self.inventory, self.node_access, vm_id, job)
