"""The libvirt driver: KVM/QEMU (and libvirt's test driver) behind the anyvirt SPI.

Thin on purpose: each concern lives in its own module (connection, listing,
domxml, storage, lifecycle, snapshots, migration); this class looks domains
up by UUID on a live connection and hands them over.
"""

from __future__ import annotations

import logging
import os
import uuid as uuidlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import libvirt

from anyvirt.driver import Driver
from anyvirt.errors import AnyvirtError, ConnectionFailed, InvalidSpec, NotFound
from anyvirt.model import (
    GIB,
    Allocation,
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
from anyvirt.target import Target
from anyvirt.tasks import Job
from anyvirt_libvirt import (
    cloning,
    domxml,
    lifecycle,
    listing,
    migration,
    snapshots,
    storage,
    templates,
    usage,
)
from anyvirt_libvirt import (
    disks as disks_mod,
)
from anyvirt_libvirt.connection import Link, libvirt_uri
from anyvirt_libvirt.embedded import default_uri, explain_open_failure, prepare_embed_root
from anyvirt_libvirt.hostfacts import ALL, HostFacts, read_host_facts
from anyvirt_libvirt.inflight import InflightRecord
from anyvirt_libvirt.migration import UNDEFINE_FLAGS
from anyvirt_libvirt.states import domain_state
from anyvirt_libvirt.templates import TemplateIndex

log = logging.getLogger(__name__)

NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "vmxnet3")
DEFAULT_POOLS = ("default", "default-pool")


class LibvirtDriver(Driver):
    backend: ClassVar[str] = "libvirt"
    platform: ClassVar[str] = "KVM/QEMU (libvirt)"
    possible_capabilities: ClassVar[frozenset[Capability]] = ALL
    placement_options: ClassVar[frozenset[str]] = frozenset()
    #: libvirt's own URI parameters (passed through to the daemon's URI) and ``root`` of embed
    uri_options: ClassVar[frozenset[str]] = frozenset({
        "root", "name", "command", "socket", "auth", "netcat", "keyfile", "no_verify", "no_tty",
        "pkipath", "known_hosts", "known_hosts_verify", "sshauth", "tls_priority", "mode", "proxy",
    })

    def __init__(self, link: Link, target: Target, embed_root: Path | None) -> None:
        self.link = link
        self.target = target
        self.embed_root = embed_root
        self.templates = TemplateIndex()
        with link.call("read host capabilities") as conn:
            has_storage = _has_storage(conn)
            self.facts: HostFacts = read_host_facts(conn, embed_root is not None, has_storage)
            self.templates.load(conn)
        self.inflight = InflightRecord(self.facts.node_id)
        if self.embed_root is None and has_storage:
            link.after_reconnect = self.sweep_inflight
            self.sweep_inflight()

    # ------------------------------------------------------------ connection
    @classmethod
    def open(cls, target: Target) -> LibvirtDriver:
        uri = libvirt_uri(target)
        embed_root = None
        if target.transport == "qemu" and target.path.rstrip("/") == "/embed":
            root = target.query.get("root")
            if not root:
                raise InvalidSpec("libvirt+qemu:///embed needs ?root=DIR")
            embed_root = Path(root)
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
        return self.facts.capabilities

    def default_overcommit(self) -> Overcommit | None:
        # libvirt's test driver reports a made-up 3 GiB host already running an 8 GiB
        # domain: an overcommit guard on those figures would refuse every create
        return Overcommit.unlimited() if self.target.transport.startswith("test") else None

    @property
    def native(self) -> libvirt.virConnect:
        return self.link.conn

    @property
    def is_local_socket(self) -> bool:
        """The target daemon is on this machine (no host in the URI)."""
        return not self.target.host

    @contextmanager
    def _domain(self, vm_id: str, what: str) -> Iterator[libvirt.virDomain]:
        with self.link.call(what) as conn:
            try:
                dom = conn.lookupByUUIDString(vm_id)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise NotFound(f"no VM with id {vm_id!r} on {self.safe_uri}") from exc
                raise
            yield dom

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
            vms = listing.list_summaries(conn, self.facts.node_id, self.templates.ids())
        cpus, memory = int(info[2]), int(info[1])
        vcpus = sum(v.cpus for v in vms)
        vm_memory = sum(v.memory_mib for v in vms)
        allocation = Allocation(
            vms=len(vms),
            running_vms=sum(1 for v in vms if v.state.value == "running"),
            vcpus=vcpus,
            memory_mib=vm_memory,
            cpu_ratio=round(vcpus / cpus, 3) if cpus else 0.0,
            memory_ratio=round(vm_memory / memory, 3) if memory else 0.0,
        )
        return HostInfo(
            name=self.facts.hostname,
            backend=self.backend,
            hypervisor=self.facts.driver_type + (f" ({self.facts.choices.domain_type})"),
            hypervisor_version=version,
            cpus=cpus,
            memory_mib=memory,
            free_memory_mib=free,
            storage=pools,
            networks=networks,
            nodes=1,
            allocation=allocation,
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
            return listing.list_summaries(conn, self.facts.node_id, self.templates.ids())

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
        with self._domain(vm_id, "VM summary") as dom:
            return listing.summary_of(dom, self.facts.node_id)

    def vm_info(self, vm_id: str) -> VMInfo:
        with self._domain(vm_id, "VM info") as dom:
            xml = dom.XMLDesc(0)
            state, raw = domain_state(dom)
            persistent = bool(dom.isPersistent())
            resolved = disks_mod.parse_disks(xml, dom.connect())
            volumes = {d.path: self._disk_facts(dom, d) for d in resolved if d.path}
        info = domxml.parse_vm_info(xml, state, raw, self.facts.node_id, volumes, resolved)
        if not persistent:
            info.extra["transient"] = True  # libvirt forgets it when it stops
        return info

    def native_vm(self, vm_id: str) -> Any:
        with self._domain(vm_id, "VM") as dom:
            return dom

    # ------------------------------------------------------------ storage helpers
    def store_for(self, requested: str | None) -> storage.DiskStore:
        """The store new volumes go to: a named pool, a pool given by its path, or the default."""
        if self.embed_root is not None:
            if requested is not None:
                raise InvalidSpec("qemu:///embed has no storage pools: leave DiskSpec.storage unset")
            return storage.DirStore(self.embed_root / "images")
        with self.link.call("storage pools") as conn:
            pools = {p.name(): p for p in conn.listAllStoragePools(0)}
            if requested is not None and requested.startswith("/"):
                # a path is accepted only when it *is* a pool's directory
                for name, pool in pools.items():
                    if _pool_path(pool) == requested.rstrip("/"):
                        requested = name
                        break
                else:
                    raise InvalidSpec(
                        f"{requested} is not a storage pool's directory: disks live in pools "
                        f"({', '.join(sorted(pools)) or 'none defined'})"
                    )
            if requested is not None:
                if requested not in pools:
                    raise NotFound(f"no storage pool {requested!r} on {self.safe_uri}")
                name = requested
            else:
                name = next((n for n in DEFAULT_POOLS if n in pools and pools[n].isActive()), "")
                if not name:
                    name = next((n for n, p in pools.items() if p.isActive()), "")
                if not name:
                    raise InvalidSpec(f"no active storage pool on {self.safe_uri} for the disks")
        return storage.PoolStore(self.link, name, self.inflight)

    def sweep_inflight(self) -> None:
        """Remove volumes a create, clone or migration left when the daemon died under
        it (see :mod:`anyvirt_libvirt.inflight`)."""
        forgotten = self.inflight.sweep(
            lambda pool, volume: storage.remove_if_unused(self.link, self.inflight, pool, volume)
        )
        if forgotten:
            log.info("removed %d volume(s) left by interrupted operations", len(forgotten))

    def inflight_key(self, path: str) -> tuple[str, str] | None:
        """(pool, name) under which the in-flight record knows a file an operation makes
        in a pool's directory outside the storage API (QEMU's console log); None for a
        file in no pool."""
        if self.embed_root is not None:
            return None
        store = self.store_for(None)
        return (store.name, os.path.basename(path)) if store.owns(path) else None

    def _volume_row(self, path: str) -> tuple[int | None, str | None, str | None]:
        """(capacity, pool, backing) of a pool volume; Nones outside every pool."""
        if self.embed_root is not None:
            try:
                capacity, backing = storage.DirStore(self.embed_root / "images").describe(path)
            except AnyvirtError:
                return (None, None, None)
            return (capacity, None, backing)
        store = self._store_of(path)
        if store is None:
            return (None, None, None)
        try:
            capacity, backing = store.describe(path)
        except NotFound:
            return (None, None, None)
        return (capacity, store.name, backing)

    def _disk_facts(
        self, dom: libvirt.virDomain, disk: disks_mod.DomainDisk
    ) -> tuple[int | None, str | None, str | None]:
        """Size, pool and backing of a disk: from its pool when it is a volume (an
        unrefreshed pool is refreshed), else the size libvirt's block info reads
        (``virsh domblkinfo``) and the backing the domain XML records."""
        capacity, pool, backing = self._volume_row(disk.path or "")
        if capacity is None and disk.path:
            try:
                capacity = int(dom.blockInfo(disk.path, 0)[0])
            except libvirt.libvirtError:
                capacity = None  # e.g. an empty CD-ROM drive, a missing file
        return capacity, pool, backing or disk.backing

    def volume_facts(self, path: str) -> tuple[int | None, str | None]:
        capacity, _pool, backing = self._volume_row(path)
        return capacity, backing

    def _store_of(self, path: str) -> storage.DiskStore | None:
        """The store holding ``path``: a pool knowing it as a volume, or the pool whose
        directory it is in once refreshed (a file another tool put there); None if the
        path is outside every pool."""
        if self.embed_root is not None:
            store = storage.DirStore(self.embed_root / "images")
            return store if store.owns(path) else None
        with self.link.call("volume") as conn:
            try:
                pool = conn.storageVolLookupByPath(path).storagePoolLookupByVolume().name()
                return storage.PoolStore(self.link, pool, self.inflight)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
            directory = os.path.dirname(os.path.normpath(path))
            for candidate in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                if _pool_path(candidate) == directory:
                    storage.refresh_pool(candidate)
                    try:
                        conn.storageVolLookupByPath(path)
                    except libvirt.libvirtError as exc:
                        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                            raise
                        return None
                    return storage.PoolStore(self.link, candidate.name(), self.inflight)
        return None

    def delete_volume_chain(self, path: str, keep: Collection[str] = (),
                            linked_clone: bool = False) -> None:
        """Delete a volume a VM used (and unshared bases not in ``keep``); never a file
        outside the pools. A linked clone's chain loses only the frozen copies made for
        linked clones: the disk of a template or original (kept by ``delete(disks=False)``)
        stays."""
        store = self._store_of(path)
        if store is not None:
            store.delete_chain(path, keep, base_deletable=(
                (lambda base: cloning.FROZEN_MARK in os.path.basename(base)) if linked_clone
                else (lambda _base: True)))

    def delete_console_log(self, path: str) -> None:
        """Remove a console log QEMU wrote next to the disks (a pool refresh finds it)."""
        if self.embed_root is not None:
            storage.DirStore(self.embed_root / "images").delete(path)
            return
        try:
            store = self.store_for(os.path.dirname(path))
        except (InvalidSpec, NotFound):
            return  # not in a pool's directory: not anyvirt's to delete
        store.delete(path)

    def console_log_for(self, vm_uuid: str) -> str | None:
        try:
            return self.store_for(None).console_log(vm_uuid)
        except (InvalidSpec, NotFound):
            return None

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
                store = self.store_for(disk.storage)
                path = self._make_disk(store, f"{vm_uuid}-disk{index}.qcow2", disk)
                made.append((store, path))
                plans.append(domxml.DiskPlan(path=path, bus=_bus(disk)))
            console = self.console_log_for(vm_uuid) if choices.domain_type != "test" else None
            xml = domxml.build_domain_xml(spec, vm_uuid, choices, plans, nics, console)
            with self.link.call(f"define VM {spec.name!r}") as conn:
                dom = conn.defineXML(xml)
            for store, path in made:
                store.settled(path)
            return self.vm_summary(dom.UUIDString())
        except BaseException:
            storage.remove_made(made)
            raise

    def _make_disk(self, store: storage.DiskStore, vol_name: str, disk: DiskSpec) -> str:
        if disk.image is not None:
            return store.import_image(vol_name, disk.image, disk.size_bytes)
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
        """Undefine the VM; with ``disks``, remove the volumes and files it owns: its
        writable disks in a pool (with bases nothing else needs), its console log,
        its NVRAM. Never a file another domain references, never one outside the pools
        (a disk another tool attached there is the caller's), never CD-ROMs."""
        with self._domain(vm_id, "delete VM") as dom:
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            conn = dom.connect()
            own = disks_mod.parse_disks(xml, conn)
            others = usage.other_domains(conn, vm_id)
            nvram = _parse(xml).findtext("os/nvram")
            keep_nvram = not disks or (nvram or "").strip() in others.paths
            _undefine(dom, keep_nvram)
        self.templates.note(vm_id, False)
        if not disks:
            return
        clone = _is_linked_clone(xml)
        for path in disks_mod.writable_paths(own):
            job.check()
            if path not in others.paths:
                self.delete_volume_chain(path, keep=others.paths, linked_clone=clone)
        log = domxml.console_log_path(_parse(xml))
        if log and log not in others.paths:
            self.delete_console_log(log)

    def linked_clones(self, vm_id: str) -> list[str]:
        """The VMs that need this one's disks: anyvirt's linked clones of it (marked in
        their metadata), and volumes another tool layered on one of its disks (deleting
        the disk would break them). The gate refuses ``delete(disks=True)`` meanwhile."""
        with self._domain(vm_id, "linked clones") as dom:
            conn = dom.connect()
            own = disks_mod.parse_disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), conn)
            others = usage.other_domains(conn, vm_id)
        users = list(others.linked_clones)
        for path in disks_mod.writable_paths(own):
            store = self._store_of(path)
            for layered in store.backing_users(path) if store is not None else []:
                user = others.owners.get(layered, layered)  # a domain's name, else the volume
                if user not in users:
                    users.append(user)
        return users

    # ------------------------------------------------------------ lifecycle
    def power(self, vm_id: str, action: PowerAction, job: Job) -> None:
        with self._domain(vm_id, f"{action.value} VM") as dom:
            lifecycle.power(dom, action, job)

    def reconfigure_vm(
        self, vm_id: str, cpus: int | None, memory_mib: int | None, job: Job
    ) -> bool:
        choices = self.facts.choices
        with self._domain(vm_id, "reconfigure VM") as dom:
            return lifecycle.reconfigure(
                dom, cpus, memory_mib, choices, live_capable=choices.domain_type != "test"
            )

    # ------------------------------------------------------------ templates
    def mark_template(self, vm_id: str, job: Job) -> VMSummary:
        return self._set_template(vm_id, True)

    def convert_to_vm(self, vm_id: str, node: str | None, job: Job) -> VMSummary:
        """A template becomes a VM again (one node: ``node`` is this one or None)."""
        return self._set_template(vm_id, False)

    def _set_template(self, vm_id: str, on: bool) -> VMSummary:
        with self._domain(vm_id, "mark template" if on else "unmark template") as dom:
            templates.set_mark(dom, on)
            self.templates.note(vm_id, on)
            return listing.summary_of(dom, self.facts.node_id)

    # ------------------------------------------------------------ snapshots
    def list_snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        with self._domain(vm_id, "list snapshots") as dom:
            return snapshots.list_snapshots(dom)

    def create_snapshot(
        self, vm_id: str, name: str, description: str, memory: bool, job: Job
    ) -> SnapshotInfo:
        with self._domain(vm_id, f"snapshot {name!r}") as dom:
            return snapshots.create(dom, name, description, memory)

    def revert_snapshot(self, vm_id: str, snapshot_id: str, job: Job) -> None:
        with self._domain(vm_id, f"revert to snapshot {snapshot_id!r}") as dom:
            snapshots.revert(dom, snapshot_id)

    def delete_snapshot(self, vm_id: str, snapshot_id: str, children: bool, job: Job) -> None:
        with self._domain(vm_id, f"delete snapshot {snapshot_id!r}") as dom:
            snapshots.delete(dom, snapshot_id, children)

    # ------------------------------------------------------------ clone and migrate
    def clone_vm(
        self, vm_id: str, name: str, linked: bool, placement: Placement, job: Job
    ) -> VMSummary:
        return cloning.clone(self, vm_id, [name], linked, job)[0]

    def clone_vms(
        self, vm_id: str, names: Sequence[str], linked: bool, placement: Placement, job: Job
    ) -> list[VMSummary]:
        """Bulk clones share one frozen copy where linked clones need one."""
        return cloning.clone(self, vm_id, list(names), linked, job)

    def migrate_vm(
        self,
        vm_id: str,
        target: Driver | None,
        placement: Placement,
        live: bool,
        job: Job,
    ) -> MigrationResult:
        if target is None:
            raise NotFound(f"{self.safe_uri} has one node; migrate to another libvirt Host")
        if not isinstance(target, LibvirtDriver):
            raise InvalidSpec("a libvirt VM migrates to another libvirt host only")
        return migration.migrate(self, vm_id, target, live, job)

    def export_disks(self, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
        from anyvirt_libvirt.export import export_disks

        return export_disks(self, vm_id, dest_dir, job)

    def disks_in_place(self, vm_id: str, job: Job) -> list[ExportedDisk] | None:
        from anyvirt_libvirt.export import disks_in_place

        return disks_in_place(self, vm_id, job)


# ---------------------------------------------------------------- helpers


def _is_linked_clone(xml: str) -> bool:
    """Whether anyvirt made this domain as a linked clone (its metadata says of which VM)."""
    meta = _parse(xml).find(f"metadata/{{{domxml.NS}}}vm")
    return meta is not None and bool(meta.get("linked-clone-of"))


def _parse(xml: str) -> Any:
    import xml.etree.ElementTree as ET

    return ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon


def _undefine(dom: libvirt.virDomain, keep_nvram: bool = False) -> None:
    """Undefine with its snapshots' metadata and managed save, and its NVRAM file unless
    ``keep_nvram``, dropping only the flags a driver refuses (libvirt's test driver knows
    no NVRAM flag, and a plain undefine refuses a domain that has snapshots)."""
    without_nvram = UNDEFINE_FLAGS & ~libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    keeping = without_nvram | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
    choices = (keeping, without_nvram) if keep_nvram else (UNDEFINE_FLAGS, without_nvram)
    for flags in choices:
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                raise
    dom.undefine()


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


def _pool_path(pool: libvirt.virStoragePool) -> str:
    path = _parse(pool.XMLDesc(0)).findtext("target/path")
    return str(path).rstrip("/") if path else ""


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
