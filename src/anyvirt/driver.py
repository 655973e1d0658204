"""The driver SPI: what a backend implements.

A backend is a subclass of :class:`Driver`, registered under one or more URI
schemes in the ``anyvirt.backends`` entry-point group. It works in plain
values (``anyvirt.model``) and ids; the user-facing handles (``Host``, ``VM``,
``Snapshot``, ``Task``) are built once, in the core, on top of it.

Rules for implementers:

* ``capabilities()`` tells the truth for *this* connection. The operation gate
  (:mod:`anyvirt.operations`) checks it, the power states, names, nodes,
  placement options, capacity and one-change-at-a-time before calling, so a
  mutating method here receives only what passed: it holds platform
  primitives, never policy, and re-checks none of that.
* Every method that changes something takes a :class:`~anyvirt.tasks.Job`:
  honour ``job.deadline`` on every wait (``job.remaining()``), report
  ``job.progress``, and hook the platform's cancel with ``job.on_cancel``.
* Translate SDK errors into :mod:`anyvirt.errors`, chaining the original
  (``anyvirt.kit`` has the table, polling, re-login and qemu-img helpers).
* A failed create or clone removes whatever it made before raising.
* ``list_vms`` costs a fixed number of round trips, however many VMs.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from anyvirt.errors import InvalidSpec, NotSupported
from anyvirt.kit.changes import ChangeSource, PollingSource
from anyvirt.kit.console import ConsoleChannel
from anyvirt.lookup import by_id_or_name
from anyvirt.model import (
    ACTION_CAPABILITY,
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
from anyvirt.tasks import Job

if TYPE_CHECKING:
    from pathlib import Path

    from anyvirt.addresses import ReportedAddress
    from anyvirt.deployment import ResolvedIdentity
    from anyvirt.extensions import Extension
    from anyvirt.kit.extent_digest import RangeDigest
    from anyvirt.target import Target

log = logging.getLogger("anyvirt")


class Driver(abc.ABC):
    """One open connection to one platform endpoint."""

    #: the backend's name, as ``Host.backend`` reports it
    backend: ClassVar[str] = ""
    #: human-readable platform name for docs and the support matrix
    platform: ClassVar[str] = ""
    #: every capability this driver *can* offer (the support matrix is built from it)
    possible_capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: those of ``possible_capabilities`` a connection has only where a condition holds (a
    #: version, a configuration, a tool installed here), each with the condition in words
    #: ("Proxmox VE 8.2 or later"): the support matrix marks them with it
    capability_conditions: ClassVar[Mapping[Capability, str]] = {}
    #: the platform refuses two VMs of one name, so a name lookup needs no second listing
    vm_names_unique: ClassVar[bool] = False
    #: hardware this platform can express, best first (cross-platform plans map onto it)
    firmware_support: ClassVar[frozenset[Firmware]] = frozenset(Firmware)
    disk_buses: ClassVar[tuple[str, ...]] = ("virtio", "scsi", "sata", "ide")
    nic_models: ClassVar[tuple[str, ...]] = ("virtio", "e1000")
    #: MAC prefixes the platform accepts for a fixed MAC (None: any unicast MAC)
    mac_prefixes: ClassVar[tuple[str, ...] | None] = None
    #: whether the platform picks a node for a new or moved VM when none is named; where
    #: it does not (False), the gate names the core's choice (``anyvirt.rules.least_loaded``)
    schedules_vms: ClassVar[bool] = True
    #: whether the platform refuses one VM with more vCPUs than its node has logical CPUs,
    #: or more memory than the node has (vSphere does; QEMU and VirtualBox run such a VM
    #: overcommitted); where True, the gate refuses it first (``CapacityExceeded``)
    bounds_vm_by_node: ClassVar[bool] = False
    #: placement options clone/migrate take besides ``node`` (storage, folder, pool)
    placement_options: ClassVar[frozenset[str]] = frozenset()
    #: URI query options this backend reads (anyvirt's own: verify, ca, timeout, ...
    #: are always known); any other is refused with InvalidSpec naming the closest
    uri_options: ClassVar[frozenset[str]] = frozenset()
    #: keyword options of ``anyvirt.connect`` this backend reads
    connect_options: ClassVar[frozenset[str]] = frozenset()
    #: whether this backend logs in (a password or token means something to it); where
    #: False, ``connect`` refuses one given in the URI, a keyword or a profile (InvalidSpec)
    #: rather than drop it unread
    takes_credentials: ClassVar[bool] = True
    #: the typed extension namespaces ``host.extension(Kind)`` hands out
    extensions: ClassVar[tuple[type[Extension], ...]] = ()
    #: seconds between two listings of the default change source (``change_source``)
    watch_interval: ClassVar[float] = 2.0

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

    def why_not(self, capability: Capability) -> str:
        """Why this connection lacks ``capability``, for the ``NotSupported`` message
        ("cloning needs vCenter"); empty when there is nothing more to say."""
        return ""

    # The platform's own rules for user strings, on top of the core's (``anyvirt.validation``):
    # each raises ``InvalidSpec`` (``validation.invalid(field, rule, message)``) stating the
    # rule. The gate calls them, after the core's rule, before anything is sent; the
    # defaults add nothing, the core's rules suffice for most platforms.
    @classmethod  # noqa: B027 - optional hooks
    def check_vm_name(cls, name: str, what: str = "name") -> None:
        """VM names (new VMs, clones, restores, migrations onto another host)."""

    @classmethod  # noqa: B027
    def check_snapshot_name(cls, name: str, what: str = "snapshot name") -> None:
        """Snapshot names."""

    @classmethod  # noqa: B027
    def check_description(cls, text: str, what: str = "description") -> None:
        """VM and snapshot descriptions (already with LF line endings)."""

    @classmethod  # noqa: B027
    def check_storage_name(cls, name: str, what: str = "storage") -> None:
        """Storage (pool, datastore) names in a ``DiskSpec`` or a ``Placement``."""

    @classmethod  # noqa: B027
    def check_network_name(cls, name: str, what: str = "network") -> None:
        """Network names in a ``NicSpec``."""

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

    def change_source(self, interval: float | None = None) -> ChangeSource:
        """A new stream of this connection's VM changes, for ``host.vms.watch()``.

        The default lists every ``interval`` seconds (``watch_interval`` if None) and
        lets the core diff the listings. Override where the platform pushes changes
        (events, long polls): the source then costs nothing while nothing changes.
        Each call makes an independent source; closing it must stop its threads and
        requests at once (see :mod:`anyvirt.kit.changes`).
        """
        return PollingSource(self.list_vms, interval or self.watch_interval)

    def find_vm(self, ref: str) -> VMSummary:
        """A VM by id, else by name (:func:`anyvirt.lookup.by_id_or_name`): ``NotFound`` if
        absent, ``AmbiguousName`` if more than one VM has that name. Override with a
        direct lookup; the core re-checks a name's matches unless ``vm_names_unique``."""
        return by_id_or_name(self.list_vms(), ref, id_of=_vm_id, name_of=_vm_name, what="VM",
                             where=self.safe_uri)

    def vm_summary(self, vm_id: str) -> VMSummary:
        """Re-read one VM's summary (``vm.refresh()``)."""
        return self.find_vm(vm_id)

    @abc.abstractmethod
    def vm_info(self, vm_id: str) -> VMInfo:
        """The detailed description of one VM."""

    def native_vm(self, vm_id: str) -> Any:
        """The SDK's own object for a VM."""
        return None

    def check_image(self, image: str, format: str | None = None) -> None:
        """Refuse a ``DiskSpec.image`` this driver cannot read, before anything is made.

        The default wants a readable local file. A backend that also takes images
        already on the platform (a vSphere ``[datastore] dir/x.vmdk``) overrides it.
        ``format`` is ``DiskSpec.format``: an override that reads the image reads it as
        that (``qemu_img.inspect_untrusted(..., format=format)``), never probing it.
        """
        if not os.path.isfile(image) or not os.access(image, os.R_OK):
            raise InvalidSpec(f"disk image {image!r} is not a readable file")
        if os.path.getsize(image) == 0:  # else a platform names a size the caller never gave
            raise InvalidSpec(f"disk image {image!r} is empty (0 bytes): it holds no disk")

    def create_vm(self, spec: VMSpec, job: Job) -> VMSummary:
        raise NotSupported(self.backend, Capability.VM_CREATE)

    def delete_vm(self, vm_id: str, disks: bool, job: Job) -> None:
        raise NotSupported(self.backend, Capability.VM_DELETE)

    # ------------------------------------------------------------ deployment (Capability.IDENTITY)
    def apply_identity(self, vm_id: str, identity: ResolvedIdentity, job: Job) -> None:
        """Give the stopped VM that anyvirt has just made (a create or a clone) this identity.

        The gate calls it inside the create or clone's own Task, before anything starts the
        VM, and removes the VM if it fails (all or none). Compile with
        :mod:`anyvirt.deployment` (a NoCloud seed ISO, guestinfo extraConfig, PVE's cloud-init
        keys). Replace whatever seed the VM inherited from its source; never change the
        source's (a template's seed stays as it is). A seed this writes belongs to this VM
        alone and ``delete_vm`` removes it with the VM.
        """
        raise NotSupported(self.backend, Capability.IDENTITY)

    def read_identity(self, vm_id: str) -> dict[str, str] | None:
        """The identity the platform holds for the VM, read back from the platform itself
        (the seed ISO's files from its volume, the guestinfo keys, PVE's config keys), as
        ``{name: text}``; None when it holds none. For ``vm.info()`` and the tests that prove
        every seed reads back field by field."""
        raise NotSupported(self.backend, Capability.IDENTITY)

    def guest_addresses(self, vm_id: str) -> list[ReportedAddress]:
        """What the platform reports of the guest's addresses, unfiltered (DHCP leases, the
        guest agent or tools, ARP); the core keeps those of the VM's own NICs that can be
        reached (:func:`anyvirt.addresses.select_addresses`). ``[]`` when it knows none yet."""
        raise NotSupported(self.backend, Capability.GUEST_ADDRESSES)

    def open_console(self, vm_id: str, timeout: float) -> ConsoleChannel:
        """Attach to the running VM's serial console (``Capability.CONSOLE``); ``timeout``
        bounds the attach. The core wraps the channel in :class:`anyvirt.console.Console`."""
        raise NotSupported(self.backend, Capability.CONSOLE)

    def guest_reports_up(self, vm_id: str) -> bool | None:
        """Whether the guest says it is up (a guest agent answering, VMware Tools running);
        None where the platform cannot tell. ``vm.wait_ready()`` waits for True where known."""
        return None

    def power(self, vm_id: str, action: PowerAction, job: Job) -> None:
        """Carry out a lifecycle verb. The gate has already checked the current state.
        ``STOP`` waits (within ``job``'s deadline) until the guest is off."""
        raise NotSupported(self.backend, ACTION_CAPABILITY[action])

    def reconfigure_vm(
        self, vm_id: str, cpus: int | None, memory_mib: int | None, job: Job
    ) -> bool:
        """Change CPUs/memory; return True if applied live, False if only to the config."""
        raise NotSupported(self.backend, Capability.RECONFIGURE)

    def mark_template(self, vm_id: str, job: Job) -> VMSummary:
        """Turn a stopped VM into a template (``vm.clone`` of it then deploys copies)."""
        raise NotSupported(self.backend, Capability.TEMPLATES)

    def convert_to_vm(self, vm_id: str, node: str | None, job: Job) -> VMSummary:
        """Turn a template back into an ordinary, stopped VM (on ``node`` if given)."""
        raise NotSupported(self.backend, Capability.TEMPLATES)

    def is_linked_clone(self, vm_id: str) -> bool:
        """Whether this VM's disks read from another VM's (it is a linked clone). The gate
        refuses to move it to another host. The default: no VM is."""
        return False

    def running_takes(self, vm_id: str) -> frozenset[str]:
        """Which of ``"cpus"`` and ``"memory_mib"`` a reconfigure of this VM may change while
        it runs (live, or for its next start): a platform fact of the VM, such as vSphere's
        per-VM CPU and memory hot-add. The gate refuses a change of any other while the VM
        runs (``InvalidState``). The default: both."""
        return frozenset({"cpus", "memory_mib"})

    def can_reach(self, other: Driver) -> bool:
        """Whether a VM of this connection can move to ``other``, a connection of the same
        backend to another endpoint. The gate refuses the move (``NotSupported``) before
        anything is sent when it cannot. The default: any endpoint of the backend."""
        return True

    def linked_clones(self, vm_id: str) -> list[str]:
        """Names of the VMs whose disks read from this VM's (its linked clones). The gate
        refuses to delete its disks, or move it to another host, while there are any."""
        return []

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
    def clone_vm(self, vm_id: str, name: str, linked: bool, placement: Placement,
                 job: Job) -> VMSummary:
        """One stopped copy of the VM (running sources copied crash-consistently)."""
        cap = Capability.LINKED_CLONE if linked else Capability.FULL_CLONE
        raise NotSupported(self.backend, cap)

    def clone_vms(self, vm_id: str, names: Sequence[str], linked: bool, placement: Placement,
                  job: Job) -> list[VMSummary]:
        """Several clones, all or none. Override to share work between them (one frozen
        base for many linked clones, one platform task)."""
        made: list[VMSummary] = []
        try:
            for i, name in enumerate(names):
                job.progress(100.0 * i / len(names), f"cloning {name}")
                made.append(self.clone_vm(vm_id, name, linked, placement, job))
        except BaseException:
            for summary in reversed(made):
                try:
                    self.delete_vm(summary.id, True, Job(f"remove clone {summary.name}", 300))
                except Exception:  # the first error is the one to report
                    log.exception("removing clone %s after a failed bulk clone", summary.name)
            raise
        return made

    def clone_with_identity(
        self, vm_id: str, names: Sequence[str], linked: bool, placement: Placement,
        identities: Sequence[ResolvedIdentity], job: Job,
    ) -> list[VMSummary]:
        """Clones each with its identity (one per name), all or none, before anything starts
        them. The default clones (``clone_vms``), then gives each its identity
        (``apply_identity``). Override where the identity can go into the clone as it is
        made (libvirt: the seed written from MACs chosen before the one define)."""
        made = self.clone_vms(vm_id, names, linked, placement, job)
        try:
            for index, (summary, identity) in enumerate(zip(made, identities, strict=True)):
                job.progress(100.0 * index / len(made), f"identity of {summary.name}")
                self.apply_identity(summary.id, identity, job)
        except BaseException:
            for summary in reversed(made):
                try:
                    self.delete_vm(summary.id, True, Job(f"remove clone {summary.name}", 300))
                except Exception:  # the first error is the one to report
                    log.exception("removing clone %s after its identity failed", summary.name)
            raise
        return made

    def migrate_vm(
        self,
        vm_id: str,
        target: Driver | None,
        placement: Placement,
        live: bool,
        job: Job,
    ) -> MigrationResult:
        """Move a VM to ``placement.node`` of this connection, or to another ``target``
        driver of the same backend (then ``placement.node`` is a node of that target, or
        None). ``placement.storage`` moves its disks too where the backend takes it."""
        cap = Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION
        raise NotSupported(self.backend, cap)

    def set_maintenance(self, node_id: str, on: bool, job: Job) -> None:
        raise NotSupported(self.backend, Capability.MAINTENANCE_MODE)

    # ---------------------------------------------------------- a failed node (host.recover)
    def recovery_candidates(self, node_id: str) -> list[RecoveryCandidate]:
        """The VMs of node ``node_id``, which no longer answers, each with what the platform
        knows of its coming back: which live nodes see its disks, whether the platform's
        own HA recovers it (and what its HA status says), or why it cannot come back. A
        read: nothing changes. ``NodeInfo.state`` of a node tells the gate whether it is
        down: "offline" only where the platform proves it (powered off, fenced), "unknown"
        where it merely does not answer."""
        raise NotSupported(self.backend, Capability.NODE_RECOVERY)

    def recover_vm(self, vm_id: str, node_id: str, start: bool, job: Job) -> VMSummary:
        """Bring one VM of a failed node up on live node ``node_id`` from its disks where
        they are: drop the stale entry the failed node left, define (register) it on
        ``node_id`` and start it if ``start``. The gate has checked that the node is down
        (or fenced by the caller's word) and that ``node_id`` sees the VM's disks."""
        raise NotSupported(self.backend, Capability.NODE_RECOVERY_RESTART)

    # ---------------------------------------------------------- disks out
    def export_disks(self, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
        """Write every disk of a stopped VM into ``dest_dir`` as files (any qemu-img format),
        streaming, never whole disks in memory. Used by backup and cross-platform moves."""
        raise NotSupported(self.backend, Capability.DISK_EXPORT)

    def export_snapshot_disks(self, vm_id: str, snapshot_id: str, dest_dir: Path,
                              job: Job) -> list[ExportedDisk]:
        """Write every disk of a VM as snapshot ``snapshot_id`` froze them into ``dest_dir``,
        while the VM may run on (a crash-consistent, point-in-time copy)."""
        raise NotSupported(self.backend, Capability.SNAPSHOT_DISK_EXPORT)

    def disks_in_place(self, vm_id: str, job: Job) -> list[ExportedDisk] | None:
        """A stopped VM's disks as files this process can read where they are (no copy),
        or None when they are not all on this machine and readable (then
        :meth:`export_disks` copies them). The caller holds the VM (nothing changes it) for
        as long as it reads them and only reads: a move pipes them straight into the target."""
        return None

    def stream_disks(self, vm_id: str,
                     job: Job) -> contextlib.AbstractContextManager[list[ExportedDisk] | None]:
        """A stopped VM's disks as local paths whose bytes are read from the platform only as
        a consumer reads them (no staging copy), valid while the context lasts; it yields
        None where the driver cannot (then :meth:`export_disks` copies them). The caller
        holds the VM and only reads."""
        return contextlib.nullcontext(None)

    def digest_disk_ranges(self, vm_id: str, disk_index: int, ranges: Sequence[tuple[int, int]],
                           job: Job) -> RangeDigest | None:
        """The sha256 of ``ranges`` (sorted, disjoint ``(offset, length)`` byte ranges) of
        the guest-visible bytes of a stopped VM's disk ``disk_index`` (in ``vm_info`` order),
        read from the platform's storage, and the length it reports it stored; None when the
        platform cannot read ranges (then a verification reads the whole disk back through
        :meth:`export_disks`). Reads only: the caller holds the VM."""
        return None


def _vm_id(vm: VMSummary) -> str:
    return vm.id


def _vm_name(vm: VMSummary) -> str:
    return vm.name


def find_one_vm(driver: Driver, ref: str) -> VMSummary:
    """``driver.find_vm(ref)``, held to one rule whatever the driver: id first, then name,
    and a name more than one VM carries is ``AmbiguousName``. A driver's own lookup that
    matched by name is checked against a listing unless the platform's names are unique
    (or the lookup is this module's, which checks already)."""
    found = driver.find_vm(ref)
    if found.id == ref or driver.vm_names_unique or type(driver).find_vm is Driver.find_vm:
        return found
    return by_id_or_name(driver.list_vms(), ref, id_of=_vm_id, name_of=_vm_name, what="VM",
                         where=driver.safe_uri)
