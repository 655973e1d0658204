"""The driver SPI: what a backend implements.

A backend is a subclass of :class:`Driver`, registered under one or more URI
schemes in the ``anyvirt.backends`` entry-point group. It works in plain
values (``anyvirt.model``) and ids; the user-facing handles (``Host``, ``VM``,
``Snapshot``, ``Task``) are built once, in the core, on top of it.

Rules for implementers:

* ``capabilities()`` tells the truth for *this* connection. The handles check
  it before calling, so an operation a backend does not declare never
  reaches it; the default methods below raise ``NotSupported`` anyway.
* Every method that changes something takes a :class:`~anyvirt.tasks.Job`:
  honour ``job.deadline`` on every wait, report ``job.progress``, and hook
  the platform's cancel with ``job.on_cancel`` where there is one.
* Translate SDK errors into :mod:`anyvirt.errors`, chaining the original.
* A failed create or clone removes whatever it made before raising.
* ``list_vms`` costs a fixed number of round trips, however many VMs.
"""

from __future__ import annotations

import abc
import os
from typing import TYPE_CHECKING, Any, ClassVar

from anyvirt.errors import InvalidSpec, NotFound, NotSupported
from anyvirt.model import (
    Capability,
    ExportedDisk,
    Firmware,
    HostInfo,
    MigrationResult,
    NodeInfo,
    Overcommit,
    PowerAction,
    SnapshotInfo,
    VMInfo,
    VMSpec,
    VMSummary,
)

if TYPE_CHECKING:
    from pathlib import Path

    from anyvirt.target import Target
    from anyvirt.tasks import Job


class Driver(abc.ABC):
    """One open connection to one platform endpoint."""

    #: the backend's name, as ``Host.backend`` reports it
    backend: ClassVar[str] = ""
    #: human-readable platform name for docs and the support matrix
    platform: ClassVar[str] = ""
    #: every capability this driver *can* offer (the support matrix is built from it)
    possible_capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: hardware this platform can express, best first (cross-platform plans map onto it)
    firmware_support: ClassVar[frozenset[Firmware]] = frozenset(Firmware)
    disk_buses: ClassVar[tuple[str, ...]] = ("virtio", "scsi", "sata", "ide")
    nic_models: ClassVar[tuple[str, ...]] = ("virtio", "e1000")
    #: MAC prefixes the platform accepts for a fixed MAC (None: any unicast MAC)
    mac_prefixes: ClassVar[tuple[str, ...] | None] = None

    # ---------------------------------------------------------- connection
    @classmethod
    @abc.abstractmethod
    def open(cls, target: Target) -> Driver:
        """Connect (and log in) to ``target``; raise ConnectionFailed / AuthenticationFailed."""

    @classmethod
    def default_uri(cls) -> str | None:
        """A URI for ``anyvirt.connect()`` with no arguments, if this backend has a local default."""
        return None

    @property
    @abc.abstractmethod
    def safe_uri(self) -> str:
        """The URI of this connection, without secrets."""

    def default_overcommit(self) -> Overcommit | None:
        """The overcommit policy to use when the caller gives none (None: anyvirt's default).
        A simulated hypervisor with made-up capacity returns ``Overcommit.unlimited()``."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection. Called once by ``Host.close()``."""

    def capabilities(self) -> frozenset[Capability]:
        """What this connection supports (may depend on version, licence, mode)."""
        return self.possible_capabilities

    @property
    def native(self) -> Any:
        """The SDK's own connection object (the escape hatch)."""
        return None

    # ---------------------------------------------------------- host and nodes
    @abc.abstractmethod
    def host_info(self) -> HostInfo:
        """Capacity and identity. Allocation may be left empty: the core fills it from list_vms."""

    @abc.abstractmethod
    def list_nodes(self) -> list[NodeInfo]:
        """The hypervisors this connection manages (one for a single host)."""

    # ---------------------------------------------------------- VMs
    @abc.abstractmethod
    def list_vms(self) -> list[VMSummary]:
        """Every VM, in a fixed, small number of round trips."""

    def find_vm(self, ref: str) -> VMSummary:
        """A VM by id, else by name; ``NotFound`` if absent. Override with a direct lookup."""
        vms = self.list_vms()
        for vm in vms:
            if vm.id == ref:
                return vm
        for vm in vms:
            if vm.name == ref:
                return vm
        raise NotFound(f"no VM with id or name {ref!r} on {self.safe_uri}")

    def vm_summary(self, vm_id: str) -> VMSummary:
        """Re-read one VM's summary (``vm.refresh()``)."""
        return self.find_vm(vm_id)

    @abc.abstractmethod
    def vm_info(self, vm_id: str) -> VMInfo:
        """The detailed description of one VM."""

    def native_vm(self, vm_id: str) -> Any:
        """The SDK's own object for a VM."""
        return None

    def check_image(self, image: str) -> None:
        """Refuse a ``DiskSpec.image`` this driver cannot read, before anything is made.

        The default wants a readable local file. A backend that also takes images
        already on the platform (a vSphere ``[datastore] dir/x.vmdk``) overrides it.
        """
        if not os.path.isfile(image) or not os.access(image, os.R_OK):
            raise InvalidSpec(f"disk image {image!r} is not a readable file")

    def create_vm(self, spec: VMSpec, job: Job) -> VMSummary:
        raise NotSupported(self.backend, Capability.VM_CREATE)

    def delete_vm(self, vm_id: str, disks: bool, job: Job) -> None:
        raise NotSupported(self.backend, Capability.VM_DELETE)

    def power(self, vm_id: str, action: PowerAction, job: Job) -> None:
        """Carry out a lifecycle verb. The core has already checked the current state."""
        raise NotSupported(self.backend, action.value)

    def reconfigure_vm(
        self, vm_id: str, cpus: int | None, memory_mib: int | None, job: Job
    ) -> bool:
        """Change CPUs/memory; return True if applied live, False if only to the config."""
        raise NotSupported(self.backend, Capability.RECONFIGURE)

    def mark_template(self, vm_id: str, job: Job) -> VMSummary:
        """Turn a stopped VM into a template (``vm.clone`` of it then deploys copies)."""
        raise NotSupported(self.backend, Capability.TEMPLATES)

    # ---------------------------------------------------------- snapshots
    def list_snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        raise NotSupported(self.backend, Capability.SNAPSHOTS)

    def create_snapshot(
        self, vm_id: str, name: str, description: str, memory: bool, job: Job
    ) -> SnapshotInfo:
        raise NotSupported(self.backend, Capability.SNAPSHOTS)

    def revert_snapshot(self, vm_id: str, snapshot_id: str, job: Job) -> None:
        raise NotSupported(self.backend, Capability.SNAPSHOTS)

    def delete_snapshot(self, vm_id: str, snapshot_id: str, children: bool, job: Job) -> None:
        raise NotSupported(self.backend, Capability.SNAPSHOTS)

    # ---------------------------------------------------------- clone, migrate
    def clone_vm(
        self, vm_id: str, name: str, linked: bool, node: str | None, job: Job
    ) -> VMSummary:
        cap = Capability.LINKED_CLONE if linked else Capability.FULL_CLONE
        raise NotSupported(self.backend, cap)

    def migrate_vm(
        self,
        vm_id: str,
        target: Driver | None,
        node: str | None,
        live: bool,
        job: Job,
    ) -> MigrationResult:
        """Move a VM to ``node`` of this connection, or to another ``target`` driver of
        the same backend (then ``node`` is a node of that target, or None)."""
        cap = Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION
        raise NotSupported(self.backend, cap)

    def set_maintenance(self, node_id: str, on: bool, job: Job) -> None:
        raise NotSupported(self.backend, Capability.MAINTENANCE_MODE)

    # ---------------------------------------------------------- disks out
    def export_disks(self, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
        """Write every disk of a stopped VM into ``dest_dir`` as files (any qemu-img format),
        streaming, never whole disks in memory. Used by backup and cross-platform moves."""
        raise NotSupported(self.backend, Capability.DISK_EXPORT)
