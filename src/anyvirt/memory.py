"""The ``memory://`` backend: the reference implementation, and a fake for your tests.

Every capability of the contract, in process. Like every driver it holds
only the platform's primitives: the operation gate (``anyvirt.operations``)
has already checked capabilities, power states, names, nodes and capacity,
and holds the VM, before any method here runs. Hosts are named by the URI
(``memory://lab``); every ``connect`` to the same name in one process sees
the same host, so a test can create VMs through one connection and check
them through another. Options, read when a name is first used::

    memory://lab?nodes=2&cpus=32&memory_mib=131072&storage_gib=2048&latency=0.0

Its test knobs live here too, with the host they act on:

* ``?latency=SECONDS``: every change takes that long, in small steps that report
  progress and honour cancel and the deadline, so ``wait=False`` tasks, progress
  bars and ``cancel()`` can be exercised;
* ``?without=snapshot,migration.live``: a connection lacking those capabilities,
  to rehearse code against a backend that cannot do something;
* :func:`inject_failure`: the next call of a driver method fails with the given
  error, after the gate's checks, to test callers' cleanup paths;
* :func:`fail_node`: a simulated node failure, for ``host.recover``: the node stops
  answering, its VMs keep the state they had (they "were running"), and it takes no
  VMs. ``proven=True`` (the default) is a failure the platform sees as down (a power
  cut it can tell: the node's state is "offline"); ``proven=False`` a node that merely
  stopped answering (state "unknown"), whose VMs may still run: recovering it then
  needs ``fenced=True``. :func:`revive_node` brings it back.

Storage: every node sees the storage named "memory" (shared, the default); a disk on
storage "local" (``DiskSpec(storage="local")``) lives on its node alone, so a VM with
one does not come back when that node fails.

Deployment, as the reference behaviour: an identity applied to a VM is kept and
read back as the NoCloud seed it compiles to (a clone inherits its original's until
its own replaces it); once a VM runs, each NIC reports a made-up DHCP lease in
10.0.0.0/8 (from the MAC's last three bytes) and an IPv6 link-local address, and
the guest counts as up.

``reset()`` forgets a host.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from attrs import define, evolve, field

from anyvirt.addresses import ReportedAddress
from anyvirt.deployment import ResolvedIdentity, compile_nocloud
from anyvirt.driver import Driver
from anyvirt.errors import ConsoleClosed, InvalidSpec, InvalidState, NotFound, TaskFailed
from anyvirt.kit import qemu_img
from anyvirt.kit.changes import ChangeSink, ChangeSource
from anyvirt.kit.console import ConsoleChannel
from anyvirt.lookup import by_id_or_name
from anyvirt.model import (
    GIB,
    Capability,
    DiskInfo,
    DiskSpec,
    ExportedDisk,
    Firmware,
    HostInfo,
    MigrationResult,
    NicInfo,
    NodeInfo,
    Placement,
    PowerAction,
    PowerState,
    RecoveryCandidate,
    SnapshotInfo,
    StorageInfo,
    VMInfo,
    VMSpec,
    VMSummary,
)
from anyvirt.target import Target
from anyvirt.tasks import Job

DEFAULT_NAME = "default"
#: the storage a node keeps to itself (``DiskSpec(storage="local")``): lost with its node
LOCAL_STORAGE = "local"
MAX_NODES = 1024  # a bound on ?nodes=: each node is a real object in this process

# The state each lifecycle verb leaves a VM in.
RESULT: dict[PowerAction, PowerState] = {
    PowerAction.START: PowerState.RUNNING,
    PowerAction.STOP: PowerState.STOPPED,
    PowerAction.POWER_OFF: PowerState.STOPPED,
    PowerAction.REBOOT: PowerState.RUNNING,
    PowerAction.RESET: PowerState.RUNNING,
    PowerAction.PAUSE: PowerState.PAUSED,
    PowerAction.RESUME: PowerState.RUNNING,
    PowerAction.SUSPEND: PowerState.SUSPENDED,
}


@define
class _Snap:
    info: SnapshotInfo
    cpus: int
    memory_mib: int
    state: PowerState
    disks: tuple[DiskInfo, ...]


@define
class _VM:
    id: str
    name: str
    cpus: int
    memory_mib: int
    node: str
    state: PowerState
    firmware: Firmware
    guest_os: str
    description: str
    disks: tuple[DiskInfo, ...]
    nics: tuple[NicInfo, ...]
    template: bool = False
    contents: dict[str, tuple[str, bytes]] = field(factory=dict)  # disk id -> (format, bytes)
    snapshots: dict[str, _Snap] = field(factory=dict)
    current_snapshot: str | None = None
    #: the identity applied to it (a clone inherits its original's, as a copied seed disk)
    identity: ResolvedIdentity | None = None

    def summary(self) -> VMSummary:
        return VMSummary(
            id=self.id, name=self.name, state=self.state, raw_state=_RAW[self.state],
            cpus=self.cpus, memory_mib=self.memory_mib, node=self.node, template=self.template,
        )


_RAW = {
    PowerState.RUNNING: "running",
    PowerState.STOPPED: "shut off",
    PowerState.PAUSED: "paused",
    PowerState.SUSPENDED: "saved",
    PowerState.CRASHED: "crashed",
    PowerState.UNKNOWN: "unknown",
}


STEPS = 5


class Knobs:
    """One memory host's simulated latency and pending injected failures."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self._failures: dict[str, Exception] = {}
        self._lock = threading.Lock()

    def fail_next(self, method: str, error: Exception) -> None:
        with self._lock:
            self._failures[method] = error

    def simulate(self, job: Job, method: str, what: str) -> None:
        """The time a platform takes, in steps; then any failure injected for ``method``."""
        job.check()
        for step in range(STEPS):
            if self.latency:
                job.sleep(self.latency / STEPS)
            job.progress(100.0 * (step + 1) / STEPS, what)
        with self._lock:
            failure = self._failures.pop(method, None)
        if failure is not None:
            raise failure


def parse_without(spec: str) -> frozenset[Capability]:
    """``without=snapshot,migration.live`` -> those capabilities."""
    out = set()
    for word in filter(None, (w.strip() for w in spec.split(","))):
        try:
            out.add(Capability(word))
        except ValueError:
            known = ", ".join(c.value for c in Capability)
            raise InvalidSpec(f"memory:// option without: unknown capability {word!r} ({known})") from None
    return frozenset(out)


def fail_node(name: str, node: str, *, proven: bool = True) -> None:
    """Simulate the failure of ``node`` (id or name) of memory host ``name``: it stops
    answering; ``proven``: the platform can tell it is down ("offline"), else it only does
    not answer ("unknown"). Its VMs stay as they were until ``host.recover`` moves them."""
    w = world(name, {})
    with w.lock:
        info = w.nodes[MemoryDriver.node_id_in(w, node)]
        w.nodes[info.id] = evolve(info, state="offline" if proven else "unknown")


def revive_node(name: str, node: str) -> None:
    """Undo :func:`fail_node`: the node answers again (and takes VMs)."""
    w = world(name, {})
    with w.lock:
        info = w.nodes[MemoryDriver.node_id_in(w, node)]
        w.nodes[info.id] = evolve(info, state="maintenance" if info.maintenance else "online")


def inject_failure(name: str, method: str, error: Exception) -> None:
    """Make the next call of driver ``method`` (e.g. ``"create_vm"``) on memory host
    ``name`` raise ``error`` after the gate's checks, so callers' cleanup paths can be
    tested."""
    world(name, {}).knobs.fail_next(method, error)


class _EchoLine:
    """A memory VM's console: it answers what is typed with the same bytes, and ends when
    the VM stops running."""

    def __init__(self, world: World, vm_id: str, name: str) -> None:
        self.world, self.vm_id, self.name = world, vm_id, name
        self._typed = b""
        self._closed = False
        self._ready = threading.Condition(world.lock)

    def read(self, timeout: float) -> bytes:
        with self._ready:
            self._ready.wait_for(lambda: self._typed or not self._live(), timeout)
            if not self._typed and not self._live():
                raise ConsoleClosed(f"the console of VM {self.name!r} ended")
            got, self._typed = self._typed, b""
            return got

    def write(self, data: bytes) -> None:
        with self._ready:
            if not self._live():
                raise ConsoleClosed(f"the console of VM {self.name!r} ended")
            self._typed += data
            self._ready.notify_all()

    def close(self) -> None:
        with self._ready:
            if not self._closed:
                self._closed = True
                self.world.consoles.discard(self.vm_id)

    def _live(self) -> bool:
        vm = self.world.vms.get(self.vm_id)
        return (not self._closed and vm is not None
                and vm.state in (PowerState.RUNNING, PowerState.PAUSED))


class World:
    """One named in-memory host: its nodes, storage and VMs."""

    def __init__(self, name: str, options: dict[str, str]) -> None:
        self.name = name
        self.lock = threading.RLock()
        nodes = _int_option(options, "nodes", 2, MAX_NODES)
        cpus = _int_option(options, "cpus", 32)
        memory = _int_option(options, "memory_mib", 131072)
        self.storage_bytes = _int_option(options, "storage_gib", 2048) * GIB
        self.knobs = Knobs(_float_option(options, "latency", 0.0))
        self.nodes = {
            f"node{i}": NodeInfo(id=f"node{i}", name=f"node{i}", cpus=cpus, memory_mib=memory,
                                 free_memory_mib=memory, cluster=name, hypervisor="memory")
            for i in range(1, nodes + 1)
        }
        self.vms: dict[str, _VM] = {}
        self._macs = itertools.count(random.randrange(0x100000))
        #: called (lock held) with a VM's id and summary, None once gone: the watch's events
        self.listeners: list[Callable[[str, VMSummary | None], None]] = []
        #: the VMs whose console is attached: one session each, as on a real serial line
        self.consoles: set[str] = set()

    def new_mac(self) -> str:
        n = next(self._macs) & 0xFFFFFF
        return f"52:54:00:{n >> 16:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"

    def emit(self, vm_id: str) -> None:
        """Tell the listeners what VM ``vm_id`` is now (call with the lock held, after
        the change, so listeners see changes in the order they were made)."""
        vm = self.vms.get(vm_id)
        summary = vm.summary() if vm is not None else None
        for listener in list(self.listeners):
            listener(vm_id, summary)

    def used_storage(self) -> int:
        return sum(d.size_bytes or 0 for vm in self.vms.values() for d in vm.disks if not d.backing)


_worlds: dict[str, World] = {}
_worlds_lock = threading.Lock()


def world(name: str, options: dict[str, str]) -> World:
    """The memory host ``name``, made with ``options`` when first used."""
    with _worlds_lock:
        if name not in _worlds:
            _worlds[name] = World(name, options)
        return _worlds[name]


def reset(name: str | None = None) -> None:
    """Forget the memory host ``name`` (or every one): the next connect starts empty."""
    with _worlds_lock:
        if name is None:
            _worlds.clear()
        else:
            _worlds.pop(name, None)


MAX_IMAGE_BYTES = 512 * 1024 * 1024
_MAGIC = {b"QFI\xfb": "qcow2", b"KDMV": "vmdk", b"conectix": "vpc"}


def _read_image(path: str, known: str | None = None) -> tuple[str, bytes]:
    """The memory backend keeps image bytes as they are, with their format: ``known`` (the
    caller's ``DiskSpec.format``), else from the magic.

    Trailing holes of a sparse file are not read: a blank 1 GiB disk costs nothing.
    """
    with open(path, "rb") as f:
        end = _data_end(f.fileno(), os.fstat(f.fileno()).st_size)
        if end > MAX_IMAGE_BYTES:
            raise InvalidSpec(f"memory:// keeps disk images in RAM; {path} holds over {MAX_IMAGE_BYTES} B")
        data = f.read(end)
    if known is not None:
        return known, data
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return fmt, data
    if data.startswith(b"<<< Oracle VM VirtualBox Disk Image >>>"):
        return "vdi", data
    return "raw", data


def _import_image(path: str, known: str | None = None) -> tuple[str, bytes, int]:
    """Bring an image into "storage": converted to raw, as a real host would, when qemu-img
    is there; else kept in its own format. ``known`` is its format when the caller knows
    it (never probed then). Returns (format, bytes, virtual size)."""
    fmt, data = _read_image(path, known)
    if fmt == "raw" or not qemu_img.available():
        size = os.path.getsize(path) if fmt == "raw" else _virtual_size(fmt, data)
        return fmt, data, size
    with tempfile.TemporaryDirectory(prefix="anyvirt-mem-") as tmp:
        raw = os.path.join(tmp, "disk.raw")
        image = qemu_img.inspect_untrusted(path, format=fmt)  # refuses backing files, extents
        try:
            qemu_img.convert(path, raw, source_format=image.format, format="raw", timeout=600)
        except TaskFailed as exc:
            raise InvalidSpec(f"qemu-img cannot read {path} as {fmt}: {exc}") from exc
        _, data = _read_image(raw, "raw")
        return "raw", data, os.path.getsize(raw)


def _data_end(fd: int, size: int) -> int:
    """Where the last data extent of a (possibly sparse) file ends."""
    end = pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole from here on
            break
        pos = end = os.lseek(fd, start, os.SEEK_HOLE)
    os.lseek(fd, 0, os.SEEK_SET)
    return min(end, size)


def _virtual_size(fmt: str, data: bytes) -> int:
    if fmt == "qcow2" and len(data) >= 32:
        return int.from_bytes(data[24:32], "big")  # header field: size in bytes
    return len(data)


def _int_option(options: dict[str, str], key: str, default: int, most: int = 2**40) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSpec(f"memory:// option {key} must be a whole number, not {raw!r}") from None
    if not 1 <= value <= most:
        raise InvalidSpec(f"memory:// option {key} must be between 1 and {most}, not {value}")
    return value


def _float_option(options: dict[str, str], key: str, default: float) -> float:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidSpec(f"memory:// option {key} must be a number, not {raw!r}") from None
    if not 0 <= value <= 3600:  # also refuses nan and inf
        raise InvalidSpec(f"memory:// option {key} must be between 0 and 3600 seconds, not {raw!r}")
    return value


class MemoryDriver(Driver):
    """The in-process reference driver."""

    backend = "memory"
    platform = "In-memory (reference and test fake)"
    # no change records: a repository's backup of a memory VM is a full read, deduplicated
    possible_capabilities = frozenset(Capability) - {Capability.CHANGED_BLOCKS}
    placement_options = frozenset({"storage"})
    schedules_vms = False  # a memory host has no scheduler: the gate names the node
    uri_options = frozenset({"nodes", "cpus", "memory_mib", "storage_gib", "latency", "without"})
    takes_credentials = False  # an in-process world: nobody to log in to

    def __init__(self, world: World, target: Target) -> None:
        self.world = world
        self._target = target
        self._capabilities = self.possible_capabilities - parse_without(target.query.get("without", ""))

    @classmethod
    def open(cls, target: Target) -> MemoryDriver:
        name = target.host or target.path.strip("/") or DEFAULT_NAME
        return cls(world(name, dict(target.query)), target)

    @property
    def safe_uri(self) -> str:
        return f"memory://{self.world.name}"

    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    @property
    def native(self) -> World:
        return self.world

    # ------------------------------------------------------------ helpers
    @contextmanager
    def _locked(self) -> Iterator[World]:
        with self.world.lock:
            yield self.world

    def _vm(self, vm_id: str) -> _VM:
        vm = self.world.vms.get(vm_id)
        if vm is None:
            raise NotFound(f"no VM with id {vm_id!r} on memory://{self.world.name}")
        return vm

    def _work(self, job: Job, method: str, what: str) -> None:
        self.world.knobs.simulate(job, method, what)

    def _pick_node(self, node: str | None, world: World | None = None) -> str:
        """The node id for ``node``: the gate has checked it, and named the core's choice
        where the caller named none (``schedules_vms`` is False)."""
        return self.node_id_in(world or self.world, node)

    @staticmethod
    def node_id_in(w: World, node: str | None) -> str:
        for info in w.nodes.values():
            if node in (info.id, info.name):
                return info.id
        raise NotFound(f"no node {node!r} on memory://{w.name}")

    # ------------------------------------------------------------ host
    def host_info(self) -> HostInfo:
        with self._locked() as w:
            used = w.used_storage()
            return HostInfo(
                name=w.name,
                backend=self.backend,
                hypervisor="memory",
                hypervisor_version="1.0",
                cpus=sum(n.cpus for n in w.nodes.values()),
                memory_mib=sum(n.memory_mib for n in w.nodes.values()),
                free_memory_mib=sum(n.memory_mib for n in w.nodes.values()) - sum(
                    vm.memory_mib for vm in w.vms.values() if vm.state is PowerState.RUNNING
                ),
                storage=(StorageInfo(name="memory", type="ram", capacity_bytes=w.storage_bytes,
                                     allocated_bytes=used,
                                     available_bytes=max(0, w.storage_bytes - used)),),
                networks=("default",),
                nodes=len(w.nodes),
            )

    def list_nodes(self) -> list[NodeInfo]:
        with self._locked() as w:
            out = []
            for info in w.nodes.values():
                running = sum(vm.memory_mib for vm in w.vms.values()
                              if vm.node == info.id and vm.state is PowerState.RUNNING)
                out.append(evolve(info, free_memory_mib=info.memory_mib - running))
            return out

    def set_maintenance(self, node_id: str, on: bool, job: Job) -> None:
        with self._locked() as w:
            node = w.nodes[self._pick_node(node_id)]
            w.nodes[node.id] = evolve(node, maintenance=on, state="maintenance" if on else "online")

    # ------------------------------------------------------------ a failed node
    def recovery_candidates(self, node_id: str) -> list[RecoveryCandidate]:
        with self._locked() as w:
            node = self._pick_node(node_id)
            out = []
            for vm in w.vms.values():
                if vm.node != node:
                    continue
                local = [d.id for d in vm.disks if d.storage == LOCAL_STORAGE]
                blocked = (f"its disks {', '.join(local)} are on node {node}'s own storage "
                           f"{LOCAL_STORAGE!r}, which failed with it" if local else "")
                out.append(RecoveryCandidate(vm.summary(), blocked=blocked))
            return out

    def recover_vm(self, vm_id: str, node_id: str, start: bool, job: Job) -> VMSummary:
        vm = self._vm(vm_id)
        node = self._pick_node(node_id)
        self._work(job, "recover_vm", f"recovering {vm.name} on {node}")
        with self._locked() as w:
            vm.node = node
            # its memory died with its node: it starts afresh from its disks, or stays off
            vm.state = PowerState.RUNNING if start else PowerState.STOPPED
            w.emit(vm_id)
            return vm.summary()

    # ------------------------------------------------------------ VMs
    def list_vms(self) -> list[VMSummary]:
        with self._locked() as w:
            return [vm.summary() for vm in w.vms.values()]

    def find_vm(self, ref: str) -> VMSummary:
        # names are unique when made through anyvirt; a world changed from outside (a
        # test's) may hold two of one name, which the lookup refuses
        with self._locked() as w:
            if ref in w.vms:
                return w.vms[ref].summary()
            return by_id_or_name([vm.summary() for vm in w.vms.values()], ref,
                                 id_of=lambda vm: vm.id, name_of=lambda vm: vm.name,
                                 what="VM", where=f"memory://{self.world.name}")

    def vm_summary(self, vm_id: str) -> VMSummary:
        with self._locked():
            return self._vm(vm_id).summary()

    def vm_info(self, vm_id: str) -> VMInfo:
        with self._locked():
            vm = self._vm(vm_id)
            return VMInfo(
                id=vm.id, name=vm.name, state=vm.state, raw_state=_RAW[vm.state], cpus=vm.cpus,
                memory_mib=vm.memory_mib, node=vm.node, firmware=vm.firmware,
                guest_os=vm.guest_os, description=vm.description, disks=vm.disks, nics=vm.nics,
                template=vm.template,
            )

    def native_vm(self, vm_id: str) -> _VM:
        return self._vm(vm_id)

    def change_source(self, interval: float | None = None) -> ChangeSource:
        """The world's own events: nothing is polled."""
        return _WorldEvents(self.world)

    def _disk(self, vm_id: str, index: int, spec: DiskSpec,
              contents: dict[str, tuple[str, bytes]]) -> DiskInfo:
        disk_id = f"disk{index}"
        size = spec.size_bytes
        fmt = "raw"
        if spec.image is not None:
            fmt, data, virtual = _import_image(spec.image, spec.format)
            contents[disk_id] = (fmt, data)
            size = max(size or 0, virtual)
        return DiskInfo(
            id=disk_id, size_bytes=size, path=f"memory://{self.world.name}/{vm_id}/{disk_id}",
            format=fmt, bus=spec.bus or "virtio", storage=spec.storage or "memory",
        )

    def create_vm(self, spec: VMSpec, job: Job) -> VMSummary:
        with self._locked() as w:
            node = self._pick_node(spec.node)
            for disk in spec.disks:
                if disk.storage not in (None, "memory", LOCAL_STORAGE):
                    raise NotFound(f"no storage {disk.storage!r} on memory://{w.name}")
        vm_id = str(uuid.uuid4())
        contents: dict[str, tuple[str, bytes]] = {}
        disks = tuple(self._disk(vm_id, i, d, contents) for i, d in enumerate(spec.disks))
        self._work(job, "create_vm", f"creating {spec.name}")
        with self._locked() as w:
            vm = _VM(
                id=vm_id, name=spec.name, cpus=spec.cpus, memory_mib=spec.memory_mib, node=node,
                state=PowerState.STOPPED, firmware=spec.firmware, guest_os=spec.guest_os,
                description=spec.description, disks=disks, contents=contents,
                nics=tuple(
                    NicInfo(id=f"nic{i}", network=n.network or "default", mac=n.mac or w.new_mac(),
                            model=n.model or "virtio")
                    for i, n in enumerate(spec.nics)
                ),
            )
            w.vms[vm_id] = vm
            w.emit(vm_id)
            return vm.summary()

    def delete_vm(self, vm_id: str, disks: bool, job: Job) -> None:
        name = self._vm(vm_id).name
        self._work(job, "delete_vm", f"deleting {name}")
        with self._locked() as w:
            w.vms.pop(vm_id, None)
            w.emit(vm_id)

    # ------------------------------------------------------------ deployment
    def apply_identity(self, vm_id: str, identity: ResolvedIdentity, job: Job) -> None:
        vm = self._vm(vm_id)
        self._work(job, "apply_identity", f"identity of {vm.name}")
        with self._locked():
            vm.identity = identity

    def read_identity(self, vm_id: str) -> dict[str, str] | None:
        """The NoCloud seed the identity compiles to, as a libvirt or VirtualBox VM's seed
        ISO would hold it."""
        with self._locked():
            vm = self._vm(vm_id)
            if vm.identity is None:
                return None
            seed = compile_nocloud(vm.identity, [n.mac for n in vm.nics if n.mac])
        return {name: data.decode() for name, data in seed.files().items()}

    def guest_addresses(self, vm_id: str) -> list[ReportedAddress]:
        """Made up, once the VM runs: per NIC a DHCP lease in 10.0.0.0/8 from its MAC's
        last three bytes, and the IPv6 link-local address a real guest also reports
        (which :func:`~anyvirt.addresses.select_addresses` leaves out)."""
        with self._locked():
            vm = self._vm(vm_id)
            if vm.state is not PowerState.RUNNING:
                return []
            reported = []
            for nic in vm.nics:
                if not nic.mac:
                    continue
                b = [int(part, 16) for part in nic.mac.split(":")]
                reported.append(ReportedAddress(nic.mac, f"10.{b[3]}.{b[4]}.{b[5]}", 8, "lease"))
                reported.append(ReportedAddress(
                    nic.mac, f"fe80::{b[0] ^ 2:02x}{b[1]:02x}:{b[2]:02x}ff:fe{b[3]:02x}:"
                    f"{b[4]:02x}{b[5]:02x}", 64, "agent"))
            return reported

    def open_console(self, vm_id: str, timeout: float) -> ConsoleChannel:
        """A serial line whose guest echoes what is typed, line by line, as a terminal in
        cooked mode does: enough for a user's test of a script that drives a console."""
        with self._locked():
            vm = self._vm(vm_id)
            if vm_id in self.world.consoles:
                raise InvalidState(f"the console of VM {vm.name!r} is in use by another session")
            self.world.consoles.add(vm_id)
        return _EchoLine(self.world, vm_id, vm.name)

    def guest_reports_up(self, vm_id: str) -> bool | None:
        """A memory guest is up as soon as it runs."""
        with self._locked():
            return self._vm(vm_id).state is PowerState.RUNNING

    def is_linked_clone(self, vm_id: str) -> bool:
        with self._locked():
            return any(d.backing for d in self._vm(vm_id).disks)

    def can_reach(self, other: Driver) -> bool:
        return isinstance(other, MemoryDriver)  # storage is per process: any memory host

    def linked_clones(self, vm_id: str) -> list[str]:
        with self._locked() as w:
            paths = {d.path for d in self._vm(vm_id).disks}
            return [o.name for o in w.vms.values()
                    if o.id != vm_id and any(d.backing in paths for d in o.disks)]

    def power(self, vm_id: str, action: PowerAction, job: Job) -> None:
        vm = self._vm(vm_id)
        self._work(job, "power", f"{action.value} {vm.name}")
        with self._locked() as w:
            vm.state = RESULT[action]
            w.emit(vm_id)

    def reconfigure_vm(self, vm_id: str, cpus: int | None, memory_mib: int | None,
                       job: Job) -> bool:
        vm = self._vm(vm_id)
        self._work(job, "reconfigure_vm", f"reconfiguring {vm.name}")
        with self._locked() as w:
            if cpus is not None:
                vm.cpus = cpus
            if memory_mib is not None:
                vm.memory_mib = memory_mib
            w.emit(vm_id)
            return vm.state is PowerState.RUNNING

    def mark_template(self, vm_id: str, job: Job) -> VMSummary:
        vm = self._vm(vm_id)
        self._work(job, "mark_template", f"marking {vm.name} as a template")
        with self._locked() as w:
            vm.template = True
            w.emit(vm_id)
            return vm.summary()

    def convert_to_vm(self, vm_id: str, node: str | None, job: Job) -> VMSummary:
        vm = self._vm(vm_id)
        self._work(job, "convert_to_vm", f"converting {vm.name} to a VM")
        with self._locked():
            vm.template = False
            if node is not None:
                vm.node = self._pick_node(node)
            self.world.emit(vm_id)
            return vm.summary()

    # ------------------------------------------------------------ snapshots
    def list_snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        with self._locked():
            vm = self._vm(vm_id)
            return [evolve(s.info, current=(s.info.id == vm.current_snapshot))
                    for s in vm.snapshots.values()]

    def _snap(self, vm: _VM, snapshot_id: str) -> _Snap:
        if snapshot_id not in vm.snapshots:
            raise NotFound(f"VM {vm.name!r} has no snapshot with id {snapshot_id!r}")
        return vm.snapshots[snapshot_id]

    def create_snapshot(self, vm_id: str, name: str, description: str, memory: bool,
                        job: Job) -> SnapshotInfo:
        vm = self._vm(vm_id)
        self._work(job, "create_snapshot", f"snapshotting {vm.name}")
        with self._locked():
            info = SnapshotInfo(
                id=str(uuid.uuid4()), name=name, description=description,
                created=datetime.now(UTC), parent_id=vm.current_snapshot, memory=memory,
                vm_state=vm.state, cpus=vm.cpus, memory_mib=vm.memory_mib,
            )
            vm.snapshots[info.id] = _Snap(info, vm.cpus, vm.memory_mib, vm.state, vm.disks)
            vm.current_snapshot = info.id
            return evolve(info, current=True)

    def revert_snapshot(self, vm_id: str, snapshot_id: str, job: Job) -> None:
        vm = self._vm(vm_id)
        with self._locked():
            snap = self._snap(vm, snapshot_id)
        self._work(job, "revert_snapshot", f"reverting {vm.name} to {snap.info.name}")
        with self._locked():
            vm.cpus, vm.memory_mib, vm.disks = snap.cpus, snap.memory_mib, snap.disks
            # a disk-only snapshot has no running guest to return to
            vm.state = snap.state if snap.info.memory else PowerState.STOPPED
            vm.current_snapshot = snap.info.id
            self.world.emit(vm_id)

    def delete_snapshot(self, vm_id: str, snapshot_id: str, children: bool, job: Job) -> None:
        with self._locked():
            vm = self._vm(vm_id)
            snap = self._snap(vm, snapshot_id)
        self._work(job, "delete_snapshot", f"deleting snapshot {snap.info.name}")
        with self._locked():
            parent = snap.info.parent_id
            doomed = {snapshot_id} | (self._descendants(vm, snapshot_id) if children else set())
            for sid in doomed:
                vm.snapshots.pop(sid, None)
            for sid, other in vm.snapshots.items():
                if other.info.parent_id == snapshot_id:
                    vm.snapshots[sid].info = evolve(other.info, parent_id=parent)
            if vm.current_snapshot in doomed:
                vm.current_snapshot = parent

    @staticmethod
    def _descendants(vm: _VM, snapshot_id: str) -> set[str]:
        found: set[str] = set()
        frontier = [snapshot_id]
        while frontier:
            sid = frontier.pop()
            for other in vm.snapshots.values():
                if other.info.parent_id == sid and other.info.id not in found:
                    found.add(other.info.id)
                    frontier.append(other.info.id)
        return found

    # ------------------------------------------------------------ clone, migrate
    def clone_vm(self, vm_id: str, name: str, linked: bool, placement: Placement,
                 job: Job) -> VMSummary:
        with self._locked():
            src = self._vm(vm_id)
            node_id = self._pick_node(placement.node) if placement.node else src.node
            # the point-in-time copy: what the disks hold now, even while the source runs
            disks_now, contents_now = src.disks, dict(src.contents)
        self._work(job, "clone_vm", f"cloning {src.name} as {name}")
        new_id = str(uuid.uuid4())
        with self._locked() as w:
            disks = tuple(
                evolve(d, path=f"memory://{w.name}/{new_id}/{d.id}",
                       backing=d.path if linked else None,
                       storage=placement.storage or d.storage)
                for d in disks_now
            )
            nics = tuple(evolve(n, mac=w.new_mac()) for n in src.nics)
            clone = _VM(
                id=new_id, name=name, cpus=src.cpus, memory_mib=src.memory_mib, node=node_id,
                state=PowerState.STOPPED, firmware=src.firmware, guest_os=src.guest_os,
                description=src.description, disks=disks, nics=nics, contents=contents_now,
                identity=src.identity,
            )
            w.vms[new_id] = clone
            w.emit(new_id)
            return clone.summary()

    def export_disks(self, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
        with self._locked():
            vm = self._vm(vm_id)
            disks, contents = vm.disks, dict(vm.contents)
        out = []
        for i, disk in enumerate(disks):
            job.progress(100.0 * i / max(len(disks), 1), f"exporting {disk.id}")
            fmt, data = contents.get(disk.id, ("raw", b""))
            path = dest_dir / f"{vm.name.replace('/', '_')}-{disk.id}.{fmt}"
            with open(path, "wb") as f:
                f.write(data)
                if fmt == "raw":
                    f.truncate(max(disk.size_bytes or 0, len(data)))  # sparse: blank disks cost nothing
            out.append(ExportedDisk(id=disk.id, path=str(path), format=fmt,
                                    size_bytes=disk.size_bytes or len(data), bus=disk.bus))
        return out

    def export_snapshot_disks(self, vm_id: str, snapshot_id: str, dest_dir: Path,
                              job: Job) -> list[ExportedDisk]:
        """A memory VM's disks change only through the API, never by a guest: what they
        hold now is what they held when ``snapshot_id`` was taken."""
        with self._locked():
            self._snap(self._vm(vm_id), snapshot_id)
        return self.export_disks(vm_id, dest_dir, job)

    def migrate_vm(self, vm_id: str, target: Driver | None, placement: Placement, live: bool,
                   job: Job) -> MigrationResult:
        # the gate has checked the target is reachable (can_reach): another memory host
        dest_world: World = self.world if target is None else target.native
        vm = self._vm(vm_id)
        source_node = vm.node
        dest_node = self._pick_node(placement.node, dest_world)
        self._work(job, "migrate_vm", f"migrating {vm.name}")
        job.commit(f"moving {vm.name}")  # the point of no return: the VM leaves its source
        # both hosts' locks, always in the same order: two moves in opposite
        # directions at once must not each hold one and wait for the other
        first, second = sorted((self.world, dest_world), key=lambda w: w.name)
        with first.lock, second.lock:
            if dest_world is not self.world:
                dest_world.vms[vm.id] = vm
                self.world.vms.pop(vm.id, None)
            vm.node = dest_node
            if placement.storage:
                vm.disks = tuple(evolve(d, storage=placement.storage) for d in vm.disks)
            for changed in {self.world, dest_world}:
                changed.emit(vm.id)
        return MigrationResult(
            vm_id=vm.id, vm_name=vm.name,
            source=f"memory://{self.world.name}/{source_node}",
            target=f"memory://{dest_world.name}/{dest_node}", live=live, duration_s=0.0,
            downtime_ms=0.0 if live else None,
            bytes_transferred=vm.memory_mib * 1024 * 1024 if live else 0,
        )


class _WorldEvents(ChangeSource):
    """A memory host's changes, as they are made (``World.emit``)."""

    pushed = True

    def __init__(self, world: World) -> None:
        self.world = world
        self._sink: ChangeSink | None = None

    def start(self, sink: ChangeSink) -> None:
        self._sink = sink
        # subscribing, listing and handing over under one lock: no change falls between
        with self.world.lock:
            self.world.listeners.append(self._heard)
            sink.snapshot([vm.summary() for vm in self.world.vms.values()])

    def _heard(self, vm_id: str, summary: VMSummary | None) -> None:
        assert self._sink is not None
        if summary is None:
            self._sink.remove(vm_id)
        else:
            self._sink.upsert(summary)

    def close(self) -> None:
        with self.world.lock, contextlib.suppress(ValueError):
            self.world.listeners.remove(self._heard)


__all__ = ["MemoryDriver", "World", "fail_node", "inject_failure", "reset", "revive_node", "world"]
