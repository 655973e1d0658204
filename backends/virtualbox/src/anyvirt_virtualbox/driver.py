"""The VirtualBox driver: the ``VBoxManage`` command behind anyvirt's SPI.

``virtualbox://`` runs the VBoxManage on PATH (or in a usual install path);
``virtualbox:///path/to/VBoxManage`` names one. ``?home=/dir`` selects the
VirtualBox configuration directory (``VBOX_USER_HOME``), with a VBoxSVC of its
own. ``?timeout=`` bounds every VBoxManage call. This class only wires the SPI
to the modules that do the work.

One connection is one host and one node. What runs guests depends on the
host: without VirtualBox's kernel driver (the wrapper says so on every call)
nothing can start, so the capabilities that need a running guest are not
declared and ``host.info().extra["kernel_driver"]`` is False. A cold migration
goes to another VirtualBox home (another ``?home=`` or VBoxManage) as an OVA
(see migration). There is no live migration, no live reconfiguration, no guest reboot (it needs Guest
Additions). Templates are anyvirt's own mark in a VM's extra data (``templates``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, cast

from anyvirt.addresses import ReportedAddress
from anyvirt.deployment import ResolvedIdentity
from anyvirt.driver import Driver
from anyvirt.errors import InvalidSpec
from anyvirt.kit import qemu_img
from anyvirt.kit.changes import ChangeSource, PollingSource
from anyvirt.model import (
    Capability,
    ExportedDisk,
    Firmware,
    HostInfo,
    MigrationResult,
    NodeInfo,
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
from anyvirt_virtualbox import (
    clone,
    create,
    export,
    guest,
    images,
    in_place,
    listings,
    machines,
    migration,
    power,
    snapshots,
    streamed,
    templates,
    watching,
)
from anyvirt_virtualbox.runner import VBoxManage, default_home, find_vboxmanage

OFFLINE = frozenset(
    {
        Capability.VM_CREATE,
        Capability.VM_DELETE,
        Capability.RECONFIGURE,
        Capability.SNAPSHOTS,
        Capability.FULL_CLONE,
        Capability.LINKED_CLONE,
        Capability.DISK_EXPORT,
        Capability.VM_CREATE_FROM_IMAGE,
        Capability.COLD_MIGRATION,
        Capability.TEMPLATES,
        Capability.TEMPLATE_TO_VM,
        Capability.LINKED_CLONE_OF_TEMPLATE,
        Capability.IDENTITY,
        Capability.IDENTITY_USER_DATA,
    }
)
RUNNING = frozenset(
    {
        Capability.START,
        Capability.STOP,
        Capability.POWER_OFF,
        Capability.RESET,
        Capability.PAUSE,
        Capability.SUSPEND,
        Capability.MEMORY_SNAPSHOTS,
        Capability.GUEST_ADDRESSES,  # the Additions of a running guest report them
    }
)
HOST_FACTS_TTL = 5.0  # seconds: how long list hostinfo / hostonlyifs answers are reused


class VirtualBoxDriver(Driver):
    backend: ClassVar[str] = "virtualbox"
    platform: ClassVar[str] = "Oracle VirtualBox (VBoxManage)"
    possible_capabilities: ClassVar[frozenset[Capability]] = OFFLINE | RUNNING
    capability_conditions: ClassVar[Mapping[Capability, str]] = {
        **dict.fromkeys(RUNNING, "VirtualBox's kernel driver (vboxdrv) loaded on the host"),
        Capability.VM_CREATE_FROM_IMAGE: qemu_img.CONDITION,
    }
    firmware_support: ClassVar[frozenset[Firmware]] = frozenset({Firmware.BIOS, Firmware.EFI})
    disk_buses: ClassVar[tuple[str, ...]] = ("sata", "nvme", "scsi", "ide", "virtio")
    nic_models: ClassVar[tuple[str, ...]] = ("e1000", "virtio", "pcnet")
    uri_options: ClassVar[frozenset[str]] = frozenset({"home"})
    #: the local VBoxManage runs as the calling user: nothing to log in to
    takes_credentials: ClassVar[bool] = False

    def __init__(
        self,
        target: Target,
        vbox: VBoxManage,
        version: listings.Version,
        kernel_driver: bool,
        driver_warning: str,
    ) -> None:
        self.target = target
        self.vbox = vbox
        self.version = version
        self.kernel_driver = kernel_driver
        self.driver_warning = driver_warning
        self.home = Path(vbox.home) if vbox.home else default_home()
        self.node = socket.gethostname() or "localhost"
        self._machine_folder: str | None = None
        self._host_cache: tuple[float, listings.HostFacts, list[listings.HostOnlyInterface]] | None = None
        caps = set(OFFLINE)
        if kernel_driver:
            caps |= RUNNING
        if not images.available():
            caps.discard(Capability.VM_CREATE_FROM_IMAGE)
        self._capabilities = frozenset(caps)

    # ---------------------------------------------------------- connection
    @classmethod
    def open(cls, target: Target) -> VirtualBoxDriver:
        if target.host:
            raise InvalidSpec(
                "virtualbox:// drives the local VBoxManage: use virtualbox:// or "
                "virtualbox:///path/to/VBoxManage, without a host name"
            )
        home = target.query.get("home") or None
        if home is not None and not os.path.isabs(home):
            raise InvalidSpec(f"virtualbox:// option home must be an absolute path, not {home!r}")
        vbox = VBoxManage(find_vboxmanage(target.path or None), home=home, timeout=target.timeout)
        out = vbox.run(["--version"], "asking VBoxManage for its version")
        version = listings.parse_version(out.stdout)
        return cls(
            target, vbox, version, kernel_driver=not out.driver_warning, driver_warning=out.driver_warning
        )

    @classmethod
    def default_uri(cls) -> str | None:
        return None

    @property
    def safe_uri(self) -> str:
        return self.target.safe_uri

    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    def why_not(self, capability: Capability) -> str:
        if capability is Capability.CONSOLE:
            return ("anyvirt does not yet wire a VirtualBox VM's serial port to a socket; until "
                    "it does: VBoxManage modifyvm VM --uart1 0x3F8 4 --uart-mode1 server "
                    "/path/sock, then socat - UNIX-CONNECT:/path/sock")
        if capability in RUNNING and not self.kernel_driver:
            return power.NO_KERNEL_DRIVER
        if capability is Capability.VM_CREATE_FROM_IMAGE and not images.available():
            return "disk images are converted with qemu-img, which is not installed"
        return ""

    @property
    def native(self) -> VBoxManage:
        return self.vbox

    # ---------------------------------------------------------- host and nodes
    def host_info(self) -> HostInfo:
        facts, hostonly = self._host_facts()
        folder = self.machine_folder()
        return HostInfo(
            name=self.node,
            backend=self.backend,
            hypervisor="VirtualBox",
            hypervisor_version=str(self.version),
            cpus=facts.cpus,
            memory_mib=facts.memory_mib,
            free_memory_mib=facts.free_memory_mib,
            storage=_folder_storage(folder, self.node),
            networks=("nat", *(f"hostonly:{i.name}" for i in hostonly)),
            extra={
                "version": f"{self.version}{'_' + self.version.build if self.version.build else ''}",
                "revision": self.version.revision,
                "kernel_driver": self.kernel_driver,
                "kernel_driver_warning": self.driver_warning,
                "machine_folder": folder,
                "home": str(self.home),
                "os": f"{facts.os} {facts.os_version}".strip(),
            },
        )

    def machine_folder(self) -> str:
        """Where new VMs go (``list systemproperties``), read once per connection."""
        if self._machine_folder is None:
            props = listings.key_values(
                self.vbox.run(["list", "systemproperties"], "reading system properties").stdout
            )
            self._machine_folder = props.get("Default machine folder", "")
        return self._machine_folder

    def _host_facts(self) -> tuple[listings.HostFacts, list[listings.HostOnlyInterface]]:
        """``list hostinfo`` and ``list hostonlyifs``, reused for a few seconds: one operation
        asks for the host's capacity several times (the gate's checks), and the answers of
        a moment ago are as good as new ones."""
        now = time.monotonic()
        if self._host_cache is None or now - self._host_cache[0] > HOST_FACTS_TTL:
            facts = listings.host_facts(self.vbox.run(["list", "hostinfo"], "reading host facts").stdout)
            hostonly = listings.host_only_interfaces(
                self.vbox.run(["list", "hostonlyifs"], "listing host-only networks").stdout
            )
            self._host_cache = (now, facts, hostonly)
        return self._host_cache[1], self._host_cache[2]

    def list_nodes(self) -> list[NodeInfo]:
        facts, _ = self._host_facts()
        return [
            NodeInfo(
                id=self.node,
                name=self.node,
                cpus=facts.cpus,
                memory_mib=facts.memory_mib,
                free_memory_mib=facts.free_memory_mib,
                hypervisor="VirtualBox",
            )
        ]

    # ---------------------------------------------------------- VMs
    def list_vms(self) -> list[VMSummary]:
        return machines.list_all(self.vbox, self.home, self.node, can_run=self.kernel_driver)

    def change_source(self, interval: float | None = None) -> ChangeSource:
        """A poll of one process per interval (VBoxManage has no event source)."""
        return PollingSource(
            lambda: watching.poll(self.vbox, self.home, self.node, can_run=self.kernel_driver),
            interval or self.watch_interval,
        )

    def find_vm(self, ref: str) -> VMSummary:
        return machines.summary(self.vbox, ref, self.node)

    def vm_summary(self, vm_id: str) -> VMSummary:
        return machines.summary(self.vbox, vm_id, self.node)

    def vm_info(self, vm_id: str) -> VMInfo:
        return machines.describe(self.vbox, vm_id, self.node)

    def native_vm(self, vm_id: str) -> dict[str, str]:
        """The VM's ``showvminfo --machinereadable`` entries."""
        return dict(machines.show(self.vbox, vm_id).values)

    def create_vm(self, spec: VMSpec, job: Job) -> VMSummary:
        vm_id = create.create_vm(self.vbox, spec, self.version, job)
        return self.vm_summary(vm_id)

    def delete_vm(self, vm_id: str, disks: bool, job: Job) -> None:
        seeds = list(guest.seeds_of(self.vbox, vm_id))  # its own, in its folder: gone with it
        machines.delete(self.vbox, vm_id, disks, timeout=job.remaining(600.0))
        for seed in seeds:
            guest.remove_seed_file(self.vbox, seed)
        if seeds and disks:
            machines.remove_empty_folders(seeds[0].parent)

    # ---------------------------------------------------------- deployment
    def apply_identity(self, vm_id: str, identity: ResolvedIdentity, job: Job) -> None:
        guest.apply_identity(self.vbox, vm_id, identity, job)

    def read_identity(self, vm_id: str) -> dict[str, str] | None:
        return guest.read_identity(self.vbox, vm_id)

    def guest_addresses(self, vm_id: str) -> list[ReportedAddress]:
        return guest.guest_addresses(self.vbox, vm_id)

    def guest_reports_up(self, vm_id: str) -> bool | None:
        return guest.guest_reports_up(self.vbox, vm_id)

    # ---------------------------------------------------------- templates
    def mark_template(self, vm_id: str, job: Job) -> VMSummary:
        """VirtualBox has no templates: anyvirt's own mark in the VM's extra data (read by
        the listing from the ``.vbox`` file), which the gate honours."""
        templates.mark(self.vbox, vm_id, True, job)
        return self.vm_summary(vm_id)

    def convert_to_vm(self, vm_id: str, node: str | None, job: Job) -> VMSummary:
        templates.mark(self.vbox, vm_id, False, job)
        return self.vm_summary(vm_id)

    def power(self, vm_id: str, action: PowerAction, job: Job) -> None:
        power.power(self.vbox, vm_id, action, job)

    def reconfigure_vm(self, vm_id: str, cpus: int | None, memory_mib: int | None, job: Job) -> bool:
        args = ["modifyvm", vm_id]
        if cpus is not None:
            args += ["--cpus", str(cpus)]
        if memory_mib is not None:
            args += ["--memory", str(memory_mib)]
        self.vbox.run(args, f"reconfiguring VM {vm_id}", timeout=job.remaining(120.0))
        return False

    # ---------------------------------------------------------- snapshots
    def list_snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        return snapshots.list_snapshots(self.vbox, self.home, vm_id)

    def create_snapshot(
        self, vm_id: str, name: str, description: str, memory: bool, job: Job
    ) -> SnapshotInfo:
        return snapshots.create_snapshot(self.vbox, self.home, vm_id, name, description, memory, job)

    def revert_snapshot(self, vm_id: str, snapshot_id: str, job: Job) -> None:
        snapshots.revert_snapshot(self.vbox, self.home, vm_id, snapshot_id, job)

    def delete_snapshot(self, vm_id: str, snapshot_id: str, children: bool, job: Job) -> None:
        snapshots.delete_snapshot(self.vbox, self.home, vm_id, snapshot_id, children, job)

    # ---------------------------------------------------------- clones, disks out
    def clone_vm(self, vm_id: str, name: str, linked: bool, placement: Placement, job: Job) -> VMSummary:
        return self.vm_summary(clone.clone_vm(self.vbox, self.home, vm_id, name, linked, job))

    def linked_clones(self, vm_id: str) -> list[str]:
        return machines.linked_clones(self.vbox, self.home, vm_id)

    def is_linked_clone(self, vm_id: str) -> bool:
        """A disk's chain reads from a base image outside this VM's folder (another VM's)."""
        info = machines.show(self.vbox, vm_id)
        return any(d.backing for d in machines.disks(info, machines.media(self.vbox)))

    def export_disks(self, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
        return export.export_disks(self.vbox, vm_id, dest_dir, job)

    def disks_in_place(self, vm_id: str, job: Job) -> list[ExportedDisk] | None:
        """Single base VDI/VMDK images this process reads as VirtualBox's own files (see
        in_place); a chain, an encrypted or shared disk, or a file not visible here: None."""
        return in_place.disks_in_place(self.vbox, vm_id, job)

    def stream_disks(self, vm_id: str,
                     job: Job) -> contextlib.AbstractContextManager[list[ExportedDisk] | None]:
        """Differencing chains of VDI images (snapshots, linked clones) read here as the
        guest sees them, while the import reads (see streamed); else None: clonemedium."""
        return streamed.streamed_disks(self.vbox, vm_id, job)

    # ---------------------------------------------------------- migration
    def migrate_vm(
        self, vm_id: str, target: Driver | None, placement: Placement, live: bool, job: Job
    ) -> MigrationResult:
        """Cold, to another VirtualBox home: one node per host, so the gate sends a move only
        to another home this one reaches (:meth:`can_reach`); ``placement.node`` says nothing."""
        other = cast(VirtualBoxDriver, target)
        return migration.migrate(self.vbox, vm_id, other.vbox, other.node, self.safe_uri,
                                 other.safe_uri, job)

    def can_reach(self, other: Driver) -> bool:
        """Another VirtualBox home: the same home through another URI is one registry seen
        twice, where an import would meet the VM itself."""
        return isinstance(other, VirtualBoxDriver) and other.home.resolve() != self.home.resolve()

    def __repr__(self) -> str:
        return f"<VirtualBoxDriver {self.safe_uri} VirtualBox {self.version}>"


def _folder_storage(folder: str, node: str) -> tuple[StorageInfo, ...]:
    """The machine folder's file system, where new VMs and their disks go (when visible here)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return ()
    capacity = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return (
        StorageInfo(
            name=folder,
            type="directory",
            capacity_bytes=capacity,
            allocated_bytes=capacity - free,
            available_bytes=free,
            node=node,
        ),
    )
