"""The libvirt driver: KVM/QEMU (and libvirt's test driver) behind the anyvirt SPI.

Thin on purpose: each concern lives in its own module (connection, listing,
domxml, storage, lifecycle, snapshots, cloning, migration, deletion, export);
this class builds the connection's :class:`~anyvirt_libvirt.site.Site` once and
hands it (or the domain it looks up) over. No helper imports this module.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, cast

import libvirt

from anyvirt.addresses import ReportedAddress
from anyvirt.deployment import ResolvedIdentity
from anyvirt.driver import Driver
from anyvirt.errors import ConnectionFailed, InvalidSpec, InvalidState, NotFound
from anyvirt.kit.changes import ChangeSource
from anyvirt.kit.console import ConsoleChannel
from anyvirt.model import (
    GIB,
    Capability,
    DiskSpec,
    ExportedDisk,
    Firmware,
    HostInfo,
    MigrationResult,
    NicSpec,
    NodeInfo,
    Overcommit,
    Placement,
    PowerAction,
    SnapshotInfo,
    StorageInfo,
    VMInfo,
    VMSpec,
    VMSummary,
)
from anyvirt.recovery.records import DefinitionRecord, RecoveryMark
from anyvirt.recovery.spi import RecoverySupport
from anyvirt.repository.sources import LiveDisk
from anyvirt.target import Target
from anyvirt.tasks import Job
from anyvirt_libvirt import (
    backupjob,
    changes,
    cloning,
    console,
    definitions,
    deletion,
    domxml,
    events,
    export,
    lifecycle,
    listing,
    migration,
    recovering,
    seeds,
    snapshots,
    storage,
    streamed,
    templates,
)
from anyvirt_libvirt import (
    disks as disks_mod,
)
from anyvirt_libvirt.connection import ACCEL_OPTION, Link, libvirt_uri
from anyvirt_libvirt.embedded import (
    check_embed_root_length,
    default_uri,
    explain_open_failure,
    prepare_embed_root,
)
from anyvirt_libvirt.hostfacts import (
    ACCELERATORS,
    ALL,
    CONDITIONS,
    HostFacts,
    embedded_node_id,
    read_host_facts,
)
from anyvirt_libvirt.inflight import InflightRecord
from anyvirt_libvirt.site import Site
from anyvirt_libvirt.states import domain_state
from anyvirt_libvirt.templates import TemplateIndex

_NO_CHANGED_BLOCKS = ("changed blocks are read from the qcow2 files' bitmaps, which needs the "
                      "disk files on this machine (a local libvirtd or qemu:///embed)")
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "vmxnet3")


class LibvirtDriver(Driver, RecoverySupport):
    backend: ClassVar[str] = "libvirt"
    platform: ClassVar[str] = "KVM/QEMU (libvirt)"
    possible_capabilities: ClassVar[frozenset[Capability]] = ALL
    capability_conditions: ClassVar[Mapping[Capability, str]] = CONDITIONS
    placement_options: ClassVar[frozenset[str]] = frozenset()
    #: libvirt refuses a second domain of one name on a connection (VIR_ERR_OPERATION_FAILED)
    vm_names_unique: ClassVar[bool] = True
    #: libvirt's own URI parameters (passed through to the daemon's URI), ``root`` of embed
    #: and anyvirt's ``accel`` (kvm|tcg: the domain type of new VMs, see hostfacts)
    uri_options: ClassVar[frozenset[str]] = frozenset({
        "root", ACCEL_OPTION, "name", "command", "socket", "auth", "netcat", "keyfile", "no_verify", "no_tty",
        "pkipath", "known_hosts", "known_hosts_verify", "sshauth", "tls_priority", "mode", "proxy",
    })

    def __init__(self, link: Link, target: Target, embed_root: Path | None) -> None:
        self.target = target
        index = TemplateIndex()
        with link.call("read host capabilities") as conn:
            has_storage = _has_storage(conn)
            facts = read_host_facts(
                conn, embed_root is not None, has_storage, accel=target.query.get(ACCEL_OPTION),
                node_id=embedded_node_id(embed_root) if embed_root is not None else None)
            index.load(conn)
        #: what the helper modules get instead of this driver
        self.site = Site(
            link=link, safe_uri=target.safe_uri, is_local_socket=not target.host, facts=facts,
            templates=index, inflight=InflightRecord(facts.node_id), embed_root=embed_root,
        )
        #: this connection's open watches, told of changes libvirt sends no event for
        self.watch_hints = events.LocalHints()
        self._lister = listing.Lister()  # remembers whether to ask for managed saves early
        if embed_root is None and has_storage:
            link.after_reconnect = self._on_contact
            self._on_contact()

    def _on_contact(self) -> None:
        """What a (re)connection cleans up: volumes of interrupted operations, and the
        autostart of stale copies another host recovered while this one was dead."""
        self.site.sweep_inflight()
        definitions.disarm_stale_copies(self.site)

    @property
    def link(self) -> Link:
        return self.site.link

    @property
    def facts(self) -> HostFacts:
        return self.site.facts

    @property
    def templates(self) -> TemplateIndex:
        return self.site.templates

    @property
    def embed_root(self) -> Path | None:
        return self.site.embed_root

    # ------------------------------------------------------------ connection
    @classmethod
    def open(cls, target: Target) -> LibvirtDriver:
        uri = libvirt_uri(target)
        accel = target.query.get(ACCEL_OPTION)
        if accel is not None and accel not in ACCELERATORS:
            raise InvalidSpec(f"?{ACCEL_OPTION}= takes {' or '.join(ACCELERATORS)}, not {accel!r}")
        embed_root = None
        if target.transport == "qemu" and target.path.rstrip("/") == "/embed":
            root = target.query.get("root")
            if not root:
                raise InvalidSpec("libvirt+qemu:///embed needs ?root=DIR")
            embed_root = Path(root)
            check_embed_root_length(embed_root)
            try:
                prepare_embed_root(embed_root)
            except OSError as exc:
                raise InvalidSpec(f"libvirt+qemu:///embed?root={root}: cannot prepare that directory "
                                  f"({exc.strerror or type(exc).__name__})") from None
        link = Link(uri, target)
        try:
            link.connect()
        except ConnectionFailed as exc:
            if target.transport != "test" or target.path in ("", "/default"):
                raise explain_open_failure(exc, uri) from exc
            quoted = True  # libvirt's parse error quotes the file (/etc/passwd's first line...)
        else:
            quoted = False
        if quoted:  # raised here, outside the except: not even __context__ keeps libvirt's text
            raise ConnectionFailed(f"libvirt's test driver cannot use {target.path!r}: not a readable "
                                   "test-driver XML file (libvirt's message, which quotes it, is withheld)")
        try:
            return cls(link, target, embed_root)
        except BaseException:
            link.close()
            raise

    @classmethod
    def default_uri(cls) -> str | None:
        return default_uri()

    @property
    def safe_uri(self) -> str:
        return self.target.safe_uri

    def close(self) -> None:
        self.link.close()

    def capabilities(self) -> frozenset[Capability]:
        if self.facts.driver_type == "TEST" or not changes.supported(self.site):
            return self.facts.capabilities - {Capability.CHANGED_BLOCKS}
        return self.facts.capabilities

    def why_not(self, capability: Capability) -> str:
        if capability is Capability.CHANGED_BLOCKS and capability not in self.capabilities():
            return _NO_CHANGED_BLOCKS
        return self.facts.reasons.get(capability, "")

    def default_overcommit(self) -> Overcommit | None:
        # libvirt's test driver reports a made-up 3 GiB host already running an 8 GiB
        # domain: an overcommit guard on those figures would refuse every create
        return Overcommit.unlimited() if self.target.transport.startswith("test") else None

    @property
    def native(self) -> libvirt.virConnect:
        return self.link.conn

    # ------------------------------------------------------------ host and nodes
    def host_info(self) -> HostInfo:
        with self.link.call("host info") as conn:
            info = conn.getInfo()
            try:
                free = int(conn.getFreeMemory()) // (1024 * 1024)
            except libvirt.libvirtError:
                free = None
            version = _version(conn.getVersion())
            pools = _pools(conn) if not self.embed_root else ()
            networks = _networks(conn) if not self.embed_root else ()
        # no allocation here: the core counts it from list_vms, by its one rule
        # (anyvirt.capacity: templates are not counted)
        return HostInfo(
            name=self.facts.hostname,
            backend=self.backend,
            hypervisor=self.facts.driver_type + (f" ({self.facts.choices.domain_type})"),
            hypervisor_version=version,
            cpus=int(info[2]),
            memory_mib=int(info[1]),
            free_memory_mib=free,
            storage=pools,
            networks=networks,
            nodes=1,
            extra={"cpu_model": info[0], "mhz": info[3], "libvirt_uri_driver": self.facts.driver_type},
        )

    def list_nodes(self) -> list[NodeInfo]:
        with self.link.call("node info") as conn:
            info = conn.getInfo()
            try:
                free: int | None = int(conn.getFreeMemory()) // (1024 * 1024)
            except libvirt.libvirtError:
                free = None
            version = _version(conn.getVersion())
        return [
            NodeInfo(
                id=self.facts.node_id,
                name=self.facts.hostname,
                cpus=int(info[2]),
                memory_mib=int(info[1]),
                free_memory_mib=free,
                hypervisor=f"{self.facts.driver_type} {version}",
            )
        ]

    # ------------------------------------------------------------ listing
    def list_vms(self) -> list[VMSummary]:
        with self.link.call("list VMs") as conn:
            return self._lister.summaries(conn, self.facts.node_id, self.templates.ids())

    def change_source(self, interval: float | None = None) -> ChangeSource:
        """Domain events on a connection of the watch's own: no polling, unless an
        ``interval`` asks for a relist that often as a safety net (libvirt sends no event
        when another tool changes a stopped domain's CPUs or memory with ``--config``)."""
        source = events.DomainEvents(Link(self.link.uri, self.target), self.facts.node_id,
                                     self.templates, resync=interval)
        self.watch_hints.add(source)
        return source

    def find_vm(self, ref: str) -> VMSummary:
        with self.link.call(f"find VM {ref!r}") as conn:
            for lookup in (conn.lookupByUUIDString, conn.lookupByName):
                try:
                    dom = lookup(ref)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() not in (
                        libvirt.VIR_ERR_NO_DOMAIN,
                        libvirt.VIR_ERR_INVALID_ARG,
                    ):
                        raise
                    continue
                return listing.summary_of(dom, self.facts.node_id)
        raise NotFound(f"no VM with id or name {ref!r} on {self.safe_uri}")

    def vm_summary(self, vm_id: str) -> VMSummary:
        with self.site.domain(vm_id, "VM summary") as dom:
            return listing.summary_of(dom, self.facts.node_id)

    def vm_info(self, vm_id: str) -> VMInfo:
        with self.site.domain(vm_id, "VM info") as dom:
            xml = dom.XMLDesc(0)
            state, raw = domain_state(dom)
            persistent = bool(dom.isPersistent())
            resolved = disks_mod.parse_disks(xml, dom.connect())
            volumes = {d.path: self.site.disk_facts(dom, d) for d in resolved if d.path}
        info = domxml.parse_vm_info(xml, state, raw, self.facts.node_id, volumes, resolved)
        if not persistent:
            info.extra["transient"] = True  # libvirt forgets it when it stops
        return info

    def native_vm(self, vm_id: str) -> Any:
        with self.site.domain(vm_id, "VM") as dom:
            return dom

    # ------------------------------------------------------------ create and delete
    @classmethod
    def check_vm_name(cls, name: str, what: str = "name") -> None:
        """Refuse a name libvirt would turn into a path it uses (a platform rule).

        libvirt names per-domain files and directories after the domain
        (``qemu/snapshot/NAME/``, ``qemu/channel/target/domain-N-NAME/``,
        ``nvram/NAME_VARS.fd``, ``qemu/NAME.log``): with ``.`` or ``..`` or a
        ``/`` in the name, its clean-up after a failed define removes other
        domains' files. Checked before anything is sent."""
        if name in (".", "..") or "/" in name:
            raise InvalidSpec(
                f"{what} {name!r} cannot be used on libvirt: libvirt makes file paths from "
                "VM names, so a name must not be '.' or '..' and must not contain '/'"
            )

    @classmethod
    def check_snapshot_name(cls, name: str, what: str = "snapshot name") -> None:
        """libvirt refuses a snapshot name holding ``/`` (it names a file after it): refused
        here, before anything is sent, rather than by libvirtd."""
        if "/" in name:
            raise InvalidSpec(f"{what} {name!r} cannot be used on libvirt: it must not contain '/' "
                              "(libvirt names a file after each snapshot)")

    def create_vm(self, spec: VMSpec, job: Job) -> VMSummary:
        choices = self.facts.choices
        if spec.firmware is Firmware.EFI and not choices.efi:
            raise InvalidSpec(f"{self.safe_uri} offers no UEFI firmware: use firmware='bios'")
        nics = self._plan_nics(spec.nics)
        vm_uuid = str(uuidlib.uuid4())
        made: list[tuple[storage.DiskStore, str]] = []
        try:
            plans = []
            for index, disk in enumerate(spec.disks):
                job.check()
                job.progress(100.0 * index / max(1, len(spec.disks)), f"disk {index}")
                store = self.site.store_for(disk.storage)
                path = self._make_disk(store, f"{vm_uuid}-disk{index}.qcow2", disk)
                made.append((store, path))
                plans.append(domxml.DiskPlan(path=path, bus=_bus(disk)))
            console = self.site.console_log_for(vm_uuid) if choices.domain_type != "test" else None
            xml = domxml.build_domain_xml(spec, vm_uuid, choices, plans, nics, console)
            with self.link.call(f"define VM {spec.name!r}") as conn:
                dom = conn.defineXML(xml)
            for store, path in made:
                store.settled(path)
            definitions.remember(self.site, dom.UUIDString())
            return self.vm_summary(dom.UUIDString())
        except BaseException:
            storage.remove_made(made)
            raise

    def _make_disk(self, store: storage.DiskStore, vol_name: str, disk: DiskSpec) -> str:
        if disk.image is not None:
            return store.import_image(vol_name, disk.image, disk.size_bytes, disk.format)
        return store.create(vol_name, disk.size_bytes or GIB)

    def _plan_nics(self, nics: tuple[NicSpec, ...]) -> list[domxml.NicPlan]:
        if not nics:
            return []
        if self.embed_root is not None:
            networks: set[str] = set()
        else:
            with self.link.call("networks") as conn:
                networks = {n.name() for n in conn.listAllNetworks(0)}
        plans = []
        for nic in nics:
            model = nic.model or "virtio"
            if model not in NIC_MODELS:
                raise InvalidSpec(f"NIC model {model!r} is not one of {', '.join(NIC_MODELS)}")
            name = nic.network or domxml.DEFAULT_NETWORK
            if name.startswith(domxml.BRIDGE_PREFIX):
                bridge = name.removeprefix(domxml.BRIDGE_PREFIX)
                plans.append(domxml.NicPlan("bridge", bridge, model, nic.mac))
            elif name.startswith(domxml.DIRECT_PREFIX) and name != domxml.DIRECT_PREFIX:
                device = name.removeprefix(domxml.DIRECT_PREFIX)
                plans.append(domxml.NicPlan("direct", device, model, nic.mac))
            elif name == domxml.ETHERNET or name.startswith(domxml.ETHERNET + ":"):
                tap = name.removeprefix(domxml.ETHERNET).removeprefix(":")
                plans.append(domxml.NicPlan("ethernet", tap, model, nic.mac))
            elif name in networks:
                plans.append(domxml.NicPlan("network", name, model, nic.mac))
            elif name in (domxml.USER_NETWORK, domxml.DEFAULT_NETWORK):
                # no libvirt network "default" (a fresh daemon, qemu:///embed): QEMU's own
                # user-mode NAT is the default network then, as it is for qemu:///session
                plans.append(domxml.NicPlan("user", name, model, nic.mac))
            else:
                raise InvalidSpec(
                    f"no network {name!r} on {self.safe_uri} (networks: "
                    f"{', '.join(sorted(networks)) or 'none'}; use 'bridge:NAME' for a host "
                    "bridge, 'direct:DEV' for macvtap on a host device, 'ethernet[:TAP]' for "
                    f"a tap device, {domxml.USER_NETWORK!r} for QEMU's user-mode NAT)"
                )
        return plans

    def delete_vm(self, vm_id: str, disks: bool, job: Job) -> None:
        if disks:
            stale = self.vm_info(vm_id).extra.get("stale_copy")
            if stale:
                raise InvalidState(f"this VM is a {stale}: its disks are the recovered VM's. "
                                   "Delete it with delete(disks=False)")
        pool = definitions.record_pool(self.site, vm_id)
        deletion.delete_vm(self.site, vm_id, disks, job)
        definitions.forget(self.site, vm_id, pool)

    # ------------------------------------------------------------ deployment
    def apply_identity(self, vm_id: str, identity: ResolvedIdentity, job: Job) -> None:
        with self.site.domain(vm_id, "write the VM's seed") as dom:
            seeds.apply_identity(self.site, dom, identity, job)
        definitions.remember(self.site, vm_id)

    def read_identity(self, vm_id: str) -> dict[str, str] | None:
        with self.site.domain(vm_id, "read the VM's seed") as dom:
            return seeds.read_identity(dom)

    def guest_addresses(self, vm_id: str) -> list[ReportedAddress]:
        with self.site.domain(vm_id, "guest addresses") as dom:
            return seeds.guest_addresses(dom)

    def open_console(self, vm_id: str, timeout: float) -> ConsoleChannel:
        return console.open_console(self.site, vm_id)

    def guest_reports_up(self, vm_id: str) -> bool | None:
        with self.site.domain(vm_id, "guest agent") as dom:
            return seeds.guest_reports_up(dom)

    def linked_clones(self, vm_id: str) -> list[str]:
        return deletion.linked_clones(self.site, vm_id)

    def is_linked_clone(self, vm_id: str) -> bool:
        return deletion.is_linked_clone(self.site, vm_id)

    def can_reach(self, other: Driver) -> bool:
        """Another libvirt daemon, not this one through another URI: libvirt itself refuses
        a migration between two hosts with one host UUID ("migrate guest to the same host")."""
        return isinstance(other, LibvirtDriver) and other.facts.node_id != self.facts.node_id

    # ------------------------------------------------------------ lifecycle
    def power(self, vm_id: str, action: PowerAction, job: Job) -> None:
        with self.site.domain(vm_id, f"{action.value} VM") as dom:
            lifecycle.power(dom, action, job)

    def reconfigure_vm(
        self, vm_id: str, cpus: int | None, memory_mib: int | None, job: Job
    ) -> bool:
        choices = self.facts.choices
        try:
            with self.site.domain(vm_id, "reconfigure VM") as dom:
                changed = lifecycle.reconfigure(
                    dom, cpus, memory_mib, choices, live_capable=choices.domain_type != "test"
                )
            definitions.remember(self.site, vm_id)
            return changed
        finally:
            self.watch_hints.touch(vm_id)  # libvirt sends no event for a config-only change

    # ------------------------------------------------------------ templates
    def mark_template(self, vm_id: str, job: Job) -> VMSummary:
        return self._set_template(vm_id, True)

    def convert_to_vm(self, vm_id: str, node: str | None, job: Job) -> VMSummary:
        """A template becomes a VM again (one node: ``node`` is this one or None)."""
        return self._set_template(vm_id, False)

    def _set_template(self, vm_id: str, on: bool) -> VMSummary:
        with self.site.domain(vm_id, "mark template" if on else "unmark template") as dom:
            templates.set_mark(dom, on)
            self.templates.note(vm_id, on)
            self.watch_hints.touch(vm_id)  # nor for the mark in a stopped domain's metadata
            summary = listing.summary_of(dom, self.facts.node_id)
        definitions.remember(self.site, vm_id)
        return summary

    # ------------------------------------------------------------ snapshots
    def list_snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        with self.site.domain(vm_id, "list snapshots") as dom:
            return snapshots.list_snapshots(dom)

    def create_snapshot(
        self, vm_id: str, name: str, description: str, memory: bool, job: Job
    ) -> SnapshotInfo:
        with self.site.domain(vm_id, f"snapshot {name!r}") as dom:
            changes.forget_checkpoints(dom)  # libvirt refuses a stopped VM's with checkpoints
            return snapshots.create(dom, name, description, memory)

    def revert_snapshot(self, vm_id: str, snapshot_id: str, job: Job) -> None:
        with self.site.domain(vm_id, f"revert to snapshot {snapshot_id!r}") as dom:
            changes.drop_all(dom, job)  # QEMU refuses a revert while a bitmap is enabled
            snapshots.revert(dom, snapshot_id)

    def delete_snapshot(self, vm_id: str, snapshot_id: str, children: bool, job: Job) -> None:
        with self.site.domain(vm_id, f"delete snapshot {snapshot_id!r}") as dom:
            changes.forget_checkpoints(dom)  # a block operation too, for libvirt
            snapshots.delete(dom, snapshot_id, children)

    # ------------------------------------------------------------ clone and migrate
    def clone_vm(
        self, vm_id: str, name: str, linked: bool, placement: Placement, job: Job
    ) -> VMSummary:
        return self.clone_vms(vm_id, [name], linked, placement, job)[0]

    def clone_vms(
        self, vm_id: str, names: Sequence[str], linked: bool, placement: Placement, job: Job
    ) -> list[VMSummary]:
        """Bulk clones share one frozen copy where linked clones need one."""
        made = cloning.clone(self.site, vm_id, list(names), linked, job)
        for clone in made:
            definitions.remember(self.site, clone.id)
        return made

    def clone_with_identity(
        self, vm_id: str, names: Sequence[str], linked: bool, placement: Placement,
        identities: Sequence[ResolvedIdentity], job: Job,
    ) -> list[VMSummary]:
        """Each clone's seed is written from the MACs chosen for it before its one define."""
        made = cloning.clone(self.site, vm_id, list(names), linked, job, list(identities))
        for clone in made:
            definitions.remember(self.site, clone.id)
        return made

    def migrate_vm(
        self,
        vm_id: str,
        target: Driver | None,
        placement: Placement,
        live: bool,
        job: Job,
    ) -> MigrationResult:
        """To another libvirt daemon: one node per connection, so the gate sends a move
        only to another host, one this one reaches (:meth:`can_reach`)."""
        arrival = cast(LibvirtDriver, target).site
        result = migration.migrate(self.site, vm_id, arrival, live, job)
        definitions.remember(arrival, result.vm_id)  # a shared pool: the record now names the arrival
        return result

    def export_disks(self, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
        return export.export_disks(self.site, vm_id, dest_dir, job)

    def disks_in_place(self, vm_id: str, job: Job) -> list[ExportedDisk] | None:
        return export.disks_in_place(self.site, vm_id, job)

    def stream_disks(self, vm_id: str,
                     job: Job) -> AbstractContextManager[list[ExportedDisk] | None]:
        return streamed.streamed_disks(self.site, vm_id, job)

    # ------------------------------------------------------------ changed blocks
    def change_mark(self, vm_id: str, disk_id: str, job: Job) -> str | None:
        return changes.change_mark(self.site, vm_id, disk_id, job)

    def changed_extents(self, vm_id: str, disk_id: str, since: str,
                        job: Job) -> list[tuple[int, int]] | None:
        return changes.changed_extents(self.site, vm_id, disk_id, since, job)

    def drop_change_mark(self, vm_id: str, disk_id: str, mark: str, job: Job) -> None:
        changes.drop_mark(self.site, vm_id, disk_id, mark, job)

    def live_disks(self, vm_id: str, since: Mapping[str, str],
                   job: Job) -> AbstractContextManager[list[LiveDisk]]:
        return backupjob.live_disks(self.site, vm_id, since, job)
    # ------------------------------------------------------------ recovery (RecoverySupport)
    def definition_records(self) -> list[DefinitionRecord]:
        return definitions.read_records(self.site)

    def recovery_marks(self) -> list[RecoveryMark]:
        return definitions.read_marks(self.site)

    def unreadable_disks(self, record: DefinitionRecord) -> list[str]:
        return recovering.unreadable_disks(self.site, record)

    def locked_disks(self, paths: list[str]) -> dict[str, str] | None:
        return recovering.locked_disks(self.site, paths)

    def define_recovered(self, record: DefinitionRecord, job: Job) -> VMSummary:
        return recovering.define(self.site, record, job)

    def undo_recovered(self, record: DefinitionRecord) -> None:
        recovering.undo(self.site, record)

    def write_recovery_mark(self, mark: RecoveryMark, record: DefinitionRecord | None) -> bool:
        return definitions.write_mark(self.site, mark, record)


# ---------------------------------------------------------------- helpers


def _parse(xml: str) -> Any:
    import xml.etree.ElementTree as ET

    return ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon


def _bus(disk: DiskSpec) -> str:
    bus = disk.bus or "virtio"
    if bus == "nvme":
        raise InvalidSpec("libvirt 9 has no NVMe disk bus: use virtio, scsi, sata or ide")
    return bus


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def _has_storage(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.listAllStoragePools(0))
    except libvirt.libvirtError:
        return False


def _pools(conn: libvirt.virConnect) -> tuple[StorageInfo, ...]:
    try:
        pools = conn.listAllStoragePools(0)
    except libvirt.libvirtError:
        return ()
    out = []
    for pool in pools:
        state, capacity, allocation, available = pool.info()
        out.append(
            StorageInfo(
                name=pool.name(),
                type=_parse(pool.XMLDesc(0)).get("type", ""),
                capacity_bytes=int(capacity),
                allocated_bytes=int(allocation),
                available_bytes=int(available),
                active=state == libvirt.VIR_STORAGE_POOL_RUNNING,
            )
        )
    return tuple(out)


def _networks(conn: libvirt.virConnect) -> tuple[str, ...]:
    try:
        return tuple(sorted(n.name() for n in conn.listAllNetworks(0)))
    except libvirt.libvirtError:
        return ()
