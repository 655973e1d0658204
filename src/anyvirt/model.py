"""Plain value types shared by the public API and the driver SPI.

Everything here is a small frozen attrs class: hashable, comparable, cheap to
build, and validated where a user hands it in (``VMSpec``, ``DiskSpec``,
``NicSpec``) so bad input fails before any host is touched.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

import attrs
from attrs import field, frozen

from anyvirt import validation
from anyvirt.capability import Capability as Capability  # re-exported: its home before
from anyvirt.deployment.identity import Identity
from anyvirt.errors import InvalidSpec

MIB = 1024 * 1024
GIB = 1024 * MIB


class PowerState(enum.Enum):
    """The normalised power state; ``raw_state`` fields keep the platform's own word."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    CRASHED = "crashed"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


class Firmware(enum.Enum):
    BIOS = "bios"
    EFI = "efi"

    def __str__(self) -> str:
        return self.value


class PowerAction(enum.Enum):
    """The lifecycle verbs a driver implements; the handle maps VM methods onto them."""

    START = "start"
    STOP = "stop"  # graceful: ACPI power button or guest tools
    POWER_OFF = "power_off"
    REBOOT = "reboot"
    RESET = "reset"
    PAUSE = "pause"
    RESUME = "resume"
    SUSPEND = "suspend"


# Actions and the capability each needs (RESUME rides on PAUSE or SUSPEND).
ACTION_CAPABILITY: dict[PowerAction, Capability] = {
    PowerAction.START: Capability.START,
    PowerAction.STOP: Capability.STOP,
    PowerAction.POWER_OFF: Capability.POWER_OFF,
    PowerAction.REBOOT: Capability.REBOOT,
    PowerAction.RESET: Capability.RESET,
    PowerAction.PAUSE: Capability.PAUSE,
    PowerAction.RESUME: Capability.PAUSE,
    PowerAction.SUSPEND: Capability.SUSPEND,
}

# ---------------------------------------------------------------- validators

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAX_NAME_LENGTH = validation.NAME_MAX_CHARS  # vSphere's limit, the strictest of the platforms


def check_name(value: str, what: str = "name") -> str:
    """The core's rule for VM names (``anyvirt.validation.NAME``): text, never empty, never
    padded, no control characters or lone surrogates, at most 80 characters and 240 bytes."""
    return validation.NAME.check(value, what)


def _name(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    check_name(value, attribute.name)


def _positive_int(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(f"{attribute.name} must be a whole number, not {value!r}")
    if value < 1:
        raise InvalidSpec(f"{attribute.name} must be at least 1, not {value}")


def _optional_positive(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(f"{attribute.name} must be a number, not {value!r}")
    if not value > 0:
        raise InvalidSpec(f"{attribute.name} must be greater than 0, not {value}")


def _optional_size(inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    _optional_positive(inst, attribute, value)
    if value is not None and not math.isfinite(value):
        raise InvalidSpec(f"{attribute.name} must be a finite number, not {value}")


def _optional_mac(_inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _MAC.match(value):
        raise InvalidSpec(f"{attribute.name} {value!r} is not a MAC address like 52:54:00:12:34:56")
    if int(value[:2], 16) & 1:
        raise InvalidSpec(f"{attribute.name} {value} is a multicast address")


def _optional_text(_inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    validation.REFERENCE.check_optional(value, attribute.name)


def _optional_image(_inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    validation.IMAGE_PATH.check_optional(value, "disk image")


def _optional_image_format(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidSpec(f"disk image format must be text, not {type(value).__name__}")
    if value not in IMAGE_FORMATS:
        raise InvalidSpec(f"image format {value!r} is not one of {', '.join(IMAGE_FORMATS)}")


def _description(value: Any) -> Any:
    """CR LF and CR become LF (XML platforms do so anyway); a non-string is left for the
    validator to refuse."""
    return validation.DESCRIPTION.check(value) if isinstance(value, str) else value


def _checked_description(_inst: object, _attribute: attrs.Attribute[Any], value: str) -> None:
    validation.DESCRIPTION.check(value)


def _lower_mac(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def _firmware(value: Firmware | str) -> Firmware:
    if isinstance(value, Firmware):
        return value
    try:
        return Firmware(str(value).lower())
    except ValueError:
        raise InvalidSpec(f"firmware must be 'bios' or 'efi', not {value!r}") from None


# ---------------------------------------------------------------- specs (input)


@frozen
class DiskSpec:
    """A disk to create: blank (``size_gib``) or from an existing image file.

    With ``image`` the file (any format ``qemu-img`` reads) is copied or
    converted into the host's storage; ``size_gib`` then grows it if larger.
    ``bus`` and ``storage`` (pool, datastore) fall back to the backend's choice.

    ``format`` is the image's format (one of :data:`IMAGE_FORMATS`) where the caller
    knows it; every import then reads the image as that, never probing it. ``None``
    (a file from elsewhere) lets the import find it from the file's magic bytes. Why:
    a raw disk holds whatever its guest wrote, a qcow2 or VMDK header included, and a
    probe would import that image instead of the disk; restores and moves, which know
    their images are raw guest bytes or an export's format, always pass it.
    """

    size_gib: float | None = field(default=None, validator=_optional_size)
    image: str | None = field(default=None, validator=_optional_image)
    bus: str | None = field(default=None, validator=_optional_text)
    storage: str | None = field(default=None, validator=_optional_text)
    format: str | None = field(default=None, validator=_optional_image_format)

    def __attrs_post_init__(self) -> None:
        if self.size_gib is None and self.image is None:
            raise InvalidSpec("a DiskSpec needs size_gib or image")
        if self.format is not None and self.image is None:
            raise InvalidSpec("a DiskSpec format is the format of its image: give the image too")
        if self.bus is not None and self.bus not in DISK_BUSES:
            raise InvalidSpec(f"disk bus {self.bus!r} is not one of {', '.join(DISK_BUSES)}")

    @property
    def size_bytes(self) -> int | None:
        return None if self.size_gib is None else int(self.size_gib * GIB)


DISK_BUSES = ("virtio", "scsi", "sata", "ide", "nvme")
#: the image formats anyvirt reads and writes (``DiskSpec.format``); the qemu-img runner
#: allow-lists exactly these (``anyvirt.kit.qemu_img.FORMATS``). qemu-img knows many more
#: (``vvfat``, ``nbd``, ``ssh``, ...); none of them is a disk file a user would hand over.
IMAGE_FORMATS: tuple[str, ...] = ("raw", "qcow2", "vmdk", "vdi", "vpc", "vhdx")


@frozen
class NicSpec:
    """A network card on a named network (libvirt network, port group, bridge).

    ``network=None`` means the backend's default network.
    """

    network: str | None = field(default=None, validator=_optional_text)
    model: str | None = field(default=None, validator=_optional_text)
    mac: str | None = field(default=None, converter=_lower_mac, validator=_optional_mac)


def _items_of(kind: type, value: Iterable[Any] | None) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidSpec(f"expected a list of {kind.__name__}, got {type(value).__name__}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, kind):
            raise InvalidSpec(f"expected {kind.__name__} items, got {type(item).__name__}")
    return items


def _disk_tuple(value: Iterable[DiskSpec] | None) -> tuple[DiskSpec, ...]:
    return _items_of(DiskSpec, value)


def _nic_tuple(value: Iterable[NicSpec] | None) -> tuple[NicSpec, ...]:
    return _items_of(NicSpec, value)


def _optional_identity(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Identity):
        raise InvalidSpec(f"identity must be an anyvirt.Identity, not {type(value).__name__}")


@frozen
class VMSpec:
    """What a VM should be. Validated on construction: a bad spec never reaches a host."""

    name: str = field(validator=_name)
    cpus: int = field(default=1, validator=_positive_int)
    memory_mib: int = field(default=512, validator=_positive_int)
    disks: tuple[DiskSpec, ...] = field(default=(), converter=_disk_tuple)
    nics: tuple[NicSpec, ...] = field(default=(), converter=_nic_tuple)
    firmware: Firmware = field(default=Firmware.BIOS, converter=_firmware)
    guest_os: str = field(default="other", validator=_optional_text)
    #: free text; CR LF and CR are stored as LF (see ``anyvirt.validation.DESCRIPTION``)
    description: str = field(default="", converter=_description, validator=_checked_description)
    node: str | None = field(default=None, validator=_optional_text)
    #: who the machine is on first boot (``anyvirt.Identity``); applied before it first starts
    identity: Identity | None = field(default=None, validator=_optional_identity)

    def __attrs_post_init__(self) -> None:
        macs = [n.mac for n in self.nics if n.mac]
        if len(macs) != len(set(macs)):
            raise InvalidSpec("two NICs of one VM have the same MAC address")


# ---------------------------------------------------------------- facts (output)


@frozen
class VMSummary:
    """What one listing gives about a VM, with no further round trip."""

    id: str
    name: str
    state: PowerState
    raw_state: str = ""
    cpus: int = 0
    memory_mib: int = 0
    node: str | None = None
    template: bool = False


# The slots' own setters, for summary_row: a listing builds one summary per VM, and
# attrs' frozen __init__ goes through object.__setattr__ per field (about 3x slower).
(_set_id, _set_name, _set_state, _set_raw_state, _set_cpus, _set_memory_mib, _set_node,
 _set_template) = (VMSummary.__dict__[f.name].__set__ for f in attrs.fields(VMSummary))
_new_object = object.__new__


def summary_row(
    id: str, name: str, state: PowerState, raw_state: str, cpus: int, memory_mib: int,
    node: str | None, template: bool, /,
) -> VMSummary:
    """A ``VMSummary`` from a row a driver read off its platform: the same value as
    ``VMSummary(...)`` (equal, hashable, frozen), built in about a third of the time,
    for listings of thousands of VMs. Every field is given; nothing is checked (the
    class has no validators to skip: a summary is output, never user input)."""
    summary: VMSummary = _new_object(VMSummary)
    _set_id(summary, id)
    _set_name(summary, name)
    _set_state(summary, state)
    _set_raw_state(summary, raw_state)
    _set_cpus(summary, cpus)
    _set_memory_mib(summary, memory_mib)
    _set_node(summary, node)
    _set_template(summary, template)
    return summary


@frozen
class Placement:
    """Where a clone, a migrated VM or a converted template goes. ``None`` leaves the
    choice to the platform: the least-loaded node, the source's storage and folder.

    ``storage`` is a libvirt pool, a vSphere datastore, a Proxmox storage;
    ``folder`` a vSphere VM folder; ``pool`` a vSphere resource pool or a Proxmox
    pool. A backend takes only the options it declares (``Driver.placement_options``);
    any other is refused before anything is sent.
    """

    node: str | None = field(default=None, validator=_optional_text)
    storage: str | None = field(default=None, validator=_optional_text)
    folder: str | None = field(default=None, validator=_optional_text)
    pool: str | None = field(default=None, validator=_optional_text)

    def given(self) -> frozenset[str]:
        """The names of the options that are set."""
        return frozenset(k for k in ("node", "storage", "folder", "pool") if getattr(self, k))


@frozen
class DiskInfo:
    """A disk as it really is: where it lives, how big, which format, on what bus."""

    id: str  # the device key/target on the VM (vda, scsi0:0, sata0, ...)
    size_bytes: int | None = None
    path: str | None = None  # file path, volume path or datastore path
    format: str | None = None
    bus: str | None = None
    storage: str | None = None  # pool or datastore holding it
    backing: str | None = None  # the parent image of a linked clone


@frozen
class NicInfo:
    id: str
    network: str | None = None
    mac: str | None = None
    model: str | None = None


@frozen
class VMInfo:
    """Everything known about a VM: the spec as it really is, plus state."""

    id: str
    name: str
    state: PowerState
    raw_state: str
    cpus: int
    memory_mib: int
    node: str | None = None
    firmware: Firmware = Firmware.BIOS
    guest_os: str = "other"
    description: str = ""
    disks: tuple[DiskInfo, ...] = ()
    nics: tuple[NicInfo, ...] = ()
    template: bool = False
    extra: dict[str, Any] = field(factory=dict, eq=False, hash=False)

    @property
    def spec(self) -> VMSpec:
        """The VM as a spec: feed it to another host's ``vms.create`` to rebuild it."""
        return VMSpec(
            name=self.name,
            cpus=max(self.cpus, 1),
            memory_mib=max(self.memory_mib, 1),
            disks=[
                DiskSpec(size_gib=(d.size_bytes or GIB) / GIB, bus=d.bus, storage=d.storage)
                for d in self.disks
            ],
            nics=[NicSpec(network=n.network, model=n.model, mac=n.mac) for n in self.nics],
            firmware=self.firmware,
            guest_os=self.guest_os or "other",
            description=self.description,
        )


@frozen
class StorageInfo:
    """A storage pool or datastore, with capacity in bytes."""

    name: str
    type: str = ""
    capacity_bytes: int = 0
    allocated_bytes: int = 0
    available_bytes: int = 0
    node: str | None = None  # None when shared by every node
    active: bool = True


@frozen
class Allocation:
    """What the defined VMs have been given, against what the host has."""

    vms: int = 0
    running_vms: int = 0
    vcpus: int = 0  # of every defined VM
    memory_mib: int = 0
    cpu_ratio: float = 0.0  # vcpus / physical cpus
    memory_ratio: float = 0.0  # allocated memory / physical memory
    #: of the powered-on VMs only (running or paused): what ``Overcommit(counts="powered-on")``
    #: holds against the limit
    powered_on_vcpus: int = 0
    powered_on_memory_mib: int = 0


#: which VMs count against the overcommit limit (``Overcommit.counts``)
OVERCOMMIT_COUNTS = ("powered-on", "defined")


def _a_counting_rule(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in OVERCOMMIT_COUNTS:
        raise InvalidSpec(f"overcommit counts must be one of {', '.join(OVERCOMMIT_COUNTS)}, "
                          f"not {value!r}")


@frozen
class Overcommit:
    """How far allocation may exceed capacity before an operation is refused.

    The ratios follow OpenStack Nova's defaults: 4 vCPUs per CPU, no memory
    overcommit. ``counts`` says which VMs are held against them:

    - ``"powered-on"`` (the default, as vSphere HA admission control): running and
      paused VMs. A stopped VM holds nothing, so defining (creating, cloning,
      restoring) is never refused; starting one is, where it would pass the limit.
    - ``"defined"``: every VM but templates, as a stopped one may start at any time;
      creating and cloning are refused too.

    Its text form, for the URI (``?overcommit=``), profiles and the CLI
    (``--overcommit``): ``cpu=8,memory=1.5,counts=defined``; keys left out keep
    their defaults, ``unlimited`` means no limit.
    """

    cpu: float = field(default=4.0, validator=_optional_positive)
    memory: float = field(default=1.0, validator=_optional_positive)
    counts: str = field(default="powered-on", validator=_a_counting_rule)

    def __str__(self) -> str:
        return f"cpu={self.cpu:g},memory={self.memory:g},counts={self.counts}"

    @classmethod
    def unlimited(cls) -> Overcommit:
        """No limit: for simulated hypervisors whose capacity figures are fiction."""
        return cls(cpu=float("inf"), memory=float("inf"))


@frozen
class HostInfo:
    name: str
    backend: str
    hypervisor: str
    hypervisor_version: str
    cpus: int
    memory_mib: int
    free_memory_mib: int | None = None
    storage: tuple[StorageInfo, ...] = ()
    networks: tuple[str, ...] = ()
    nodes: int = 1
    allocation: Allocation = field(factory=Allocation)
    overcommit: Overcommit = field(factory=Overcommit)
    extra: dict[str, Any] = field(factory=dict, eq=False, hash=False)


@frozen
class NodeInfo:
    """One hypervisor this connection manages (an ESXi host, a Proxmox node, ...)."""

    id: str
    name: str
    state: str = "online"  # online | offline | maintenance | unknown
    cpus: int = 0
    memory_mib: int = 0
    free_memory_mib: int | None = None
    cluster: str | None = None
    maintenance: bool = False
    hypervisor: str = ""


@frozen
class RecoveryCandidate:
    """One VM of a failed node, as the driver sees it before a recovery: plain values for the
    gate, which decides what happens to it (``host.recover``)."""

    vm: VMSummary  #: as last known: its state says what it was doing when the node failed
    #: ids of the live nodes that see its disks (None: any node of the failed node's cluster)
    nodes: frozenset[str] | None = None
    #: the platform's own HA brings it back, not anyvirt: what the HA status says of it
    by_cluster: str | None = None
    blocked: str = ""  #: why it cannot come back on any node ("" when it can)


@frozen
class RecoveredVM:
    """What became of one candidate, in plain values; ``host.recover`` turns it into an
    ``anyvirt.recovery.RecoveryResult`` with a handle."""

    vm_name: str
    old_id: str
    outcome: str  #: an ``anyvirt.recovery.RecoveredFrom`` value
    summary: VMSummary | None = None  #: the VM where it runs now (None: not recovered)
    reason: str = ""
    elapsed: float = 0.0  #: seconds from the start of the recovery until it ran or gave up


@frozen
class SnapshotInfo:
    """One snapshot of a VM. The tree is built from ``parent_id`` links."""

    id: str
    name: str
    description: str = ""
    created: datetime | None = None
    parent_id: str | None = None
    memory: bool = False
    vm_state: PowerState | None = None
    current: bool = False
    #: the VM's CPUs and memory as the snapshot holds them (revert brings them back);
    #: None where the platform does not say
    cpus: int | None = None
    memory_mib: int | None = None


@frozen
class MigrationResult:
    """What a migration did. Durations in seconds, downtime in milliseconds."""

    vm_id: str
    vm_name: str
    source: str
    target: str
    live: bool
    duration_s: float
    downtime_ms: float | None = None
    bytes_transferred: int | None = None
    warnings: tuple[str, ...] = ()
    # what was checked before the move reported success (and delete_source ran), e.g.
    # ("config", "byte-count", "read-back"); the per-disk detail is in ``disks``
    verified: tuple[str, ...] = ()
    disks: tuple[DiskVerification, ...] = ()
    consistency: str | None = None  # "stopped", "shut down first", "crash-consistent snapshot"


@frozen
class DiskVerification:
    """How one moved disk was proven to hold the source's bytes.

    ``method``: ``sha256`` (the guest-visible bytes read back from the target hash to
    the same sha256 as those streamed out of the source) or ``qemu-img compare`` (the
    images differ in format or size; compared byte for byte, the rest must be zeros) or
    ``sha256 of data ranges`` (only the ranges the source holds data in, hashed on both
    sides: on the target's side read back by ranged reads, or, where the target has none,
    from its whole read-back, whose bytes elsewhere must be zeros; on the source's side
    taken as the copy read them where it could, so a source streamed from afar is not read
    a second time: the copy's data proven without carrying its zeros back).
    """

    id: str
    size_bytes: int
    source_sha256: str | None
    target_sha256: str | None
    method: str
    exported_bytes: int | None = None  # bytes the source's export stream carried
    read_back_bytes: int | None = None  # bytes read back from the target to prove it


@frozen
class ExportedDisk:
    """A VM disk written out to a local file by ``Driver.export_disks``."""

    id: str
    path: str
    format: str  # qemu-img format name: raw, qcow2, vmdk, vdi, ...
    size_bytes: int  # the virtual size the guest sees
    bus: str | None = None
    # the sha256 and length of the file as it streamed in, when the driver hashed it on
    # the way (saves reading the file again); None: the core computes it
    sha256: str | None = None
    stream_bytes: int | None = None


_A = TypeVar("_A")


def evolve(inst: _A, **changes: Any) -> _A:
    """``attrs.evolve`` re-exported (typed) so drivers need not import attrs for it."""
    return attrs.evolve(inst, **changes)  # type: ignore[misc]
