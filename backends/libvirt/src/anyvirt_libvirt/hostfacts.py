"""What one libvirt connection offers, read once when it opens.

The domain type (KVM when usable, else TCG), the firmware choices (UEFI
only where the domain capabilities list it) and the capabilities anyvirt
declares for the connection all come from the daemon's own capability XML,
never from assumptions about the backend.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

import libvirt
from attrs import field, frozen

from anyvirt.errors import InvalidSpec
from anyvirt.model import Capability
from anyvirt_libvirt.domxml import HostChoices

ALL = frozenset(
    {
        Capability.VM_CREATE,
        Capability.VM_CREATE_FROM_IMAGE,
        Capability.VM_DELETE,
        Capability.START,
        Capability.STOP,
        Capability.POWER_OFF,
        Capability.REBOOT,
        Capability.RESET,
        Capability.PAUSE,
        Capability.SUSPEND,
        Capability.RECONFIGURE,
        Capability.LIVE_RECONFIGURE,
        Capability.SNAPSHOTS,
        Capability.MEMORY_SNAPSHOTS,
        Capability.FULL_CLONE,
        Capability.LINKED_CLONE,
        Capability.COLD_MIGRATION,
        Capability.LIVE_MIGRATION,
        Capability.TASK_CANCEL,
        Capability.DISK_EXPORT,
        Capability.TEMPLATES,
        Capability.TEMPLATE_TO_VM,
        Capability.LINKED_CLONE_OF_TEMPLATE,
        Capability.DELETE_KEEP_DISKS,
        Capability.CLONE_RUNNING,
        Capability.COLD_MIGRATION_SNAPSHOTS,
        Capability.IDENTITY,
        Capability.IDENTITY_USER_DATA,
        Capability.GUEST_ADDRESSES,
        Capability.CONSOLE,
        Capability.CHANGED_BLOCKS,  # local daemons only: see LibvirtDriver.capabilities
    }
)

#: libvirt's in-process test driver: no real hypervisor, no migration, no volume streams
TEST_DRIVER = ALL - {
    Capability.VM_CREATE_FROM_IMAGE,
    Capability.CLONE_RUNNING,  # no block jobs
    Capability.COLD_MIGRATION_SNAPSHOTS,
    Capability.LIVE_RECONFIGURE,
    Capability.COLD_MIGRATION,
    Capability.LIVE_MIGRATION,
    Capability.TASK_CANCEL,
    Capability.DISK_EXPORT,
    Capability.IDENTITY,  # seeds are uploaded as volumes: no volume streams
    Capability.IDENTITY_USER_DATA,
    Capability.GUEST_ADDRESSES,  # no guest, no network with leases
    Capability.CONSOLE,  # no guest writes to it: the test driver has no console streams
    Capability.CHANGED_BLOCKS,  # no image files
}

#: qemu:///embed: no daemon another host could migrate to or from
EMBEDDED = ALL - {
    Capability.COLD_MIGRATION,
    Capability.COLD_MIGRATION_SNAPSHOTS,
    Capability.LIVE_MIGRATION,
    Capability.TASK_CANCEL,
    Capability.CLONE_RUNNING,  # block copies into its plain directory are not proven yet
    Capability.IDENTITY,  # no storage pool to hold a seed volume
    Capability.IDENTITY_USER_DATA,
}


@frozen
class HostFacts:
    driver_type: str  # QEMU | TEST
    node_id: str
    hostname: str
    choices: HostChoices
    capabilities: frozenset[Capability]
    #: why each capability of :data:`ALL` this connection lacks is missing (``host.why_not``)
    reasons: Mapping[Capability, str] = field(factory=dict)


#: why a kind of connection lacks what a system libvirtd with storage pools offers
_TEST_DRIVER_WHY = "libvirt's test driver has no real hypervisor (no migration, block jobs or volume streams)"
_EMBEDDED_NO_POOL = "the embedded QEMU (qemu:///embed) has no storage pool to hold a seed volume"
_EMBEDDED_WHY = {
    Capability.COLD_MIGRATION: "the embedded QEMU (qemu:///embed) has no daemon another host could "
                               "migrate to or from: use a libvirtd URI (libvirt+qemu:///system)",
    Capability.LIVE_MIGRATION: "the embedded QEMU (qemu:///embed) has no daemon another host could "
                               "migrate to or from: use a libvirtd URI (libvirt+qemu:///system)",
    Capability.COLD_MIGRATION_SNAPSHOTS: "the embedded QEMU (qemu:///embed) cannot migrate",
    Capability.TASK_CANCEL: "the embedded QEMU (qemu:///embed) runs its jobs in this process",
    Capability.CLONE_RUNNING: "the embedded QEMU (qemu:///embed) has no storage pool to copy a running "
                              "disk into: stop the VM first, or use a libvirtd URI",
    Capability.IDENTITY: _EMBEDDED_NO_POOL,
    Capability.IDENTITY_USER_DATA: _EMBEDDED_NO_POOL,
}
_NO_STORAGE_WHY = "this libvirtd has no active storage pool to hold new disks"


#: ``?accel=`` of a libvirt URI -> the domain type it asks for
ACCELERATORS = {"kvm": "kvm", "tcg": "qemu"}


def read_host_facts(conn: libvirt.virConnect, embedded: bool, has_storage: bool,
                    accel: str | None = None) -> HostFacts:
    """The connection's facts; ``accel`` (a key of :data:`ACCELERATORS`) forces the domain type."""
    driver_type = conn.getType()
    hostname = conn.getHostname()
    caps = ET.fromstring(conn.getCapabilities())  # noqa: S314 - XML from the daemon
    node_id = caps.findtext("host/uuid") or hostname
    choices = _choices(conn, caps, accel)
    reasons: dict[Capability, str] = {}
    if driver_type == "TEST":
        capabilities = TEST_DRIVER
        reasons = dict.fromkeys(ALL - TEST_DRIVER, _TEST_DRIVER_WHY)
    elif embedded:
        capabilities = EMBEDDED
        reasons = {c: _EMBEDDED_WHY[c] for c in ALL - EMBEDDED}
    else:
        capabilities = ALL
    if not has_storage and not embedded:
        unstored = {
            Capability.VM_CREATE_FROM_IMAGE,
            Capability.FULL_CLONE,
            Capability.LINKED_CLONE,
            Capability.LINKED_CLONE_OF_TEMPLATE,
            Capability.CLONE_RUNNING,
        }
        capabilities = capabilities - unstored
        reasons = {**dict.fromkeys(unstored, _NO_STORAGE_WHY), **reasons}
    return HostFacts(driver_type, node_id, hostname, choices, frozenset(capabilities), reasons)


def _choices(conn: libvirt.virConnect, caps: ET.Element, accel: str | None = None) -> HostChoices:
    """Pick the domain type and machine for x86_64 (else the first guest arch offered).

    KVM when offered, else TCG; ``accel`` overrides that, for hosts whose KVM cannot run a
    guest (a software-nested KVM runs no stock Linux kernel, TCG does).
    """
    guests = caps.findall("guest")
    hvm = [g for g in guests if g.findtext("os_type") == "hvm"] or guests
    chosen = next((g for g in hvm if g.find("arch").get("name") == "x86_64"), None)  # type: ignore[union-attr]
    if chosen is None and hvm:
        chosen = hvm[0]
    if chosen is None:
        return HostChoices(domain_type="qemu")  # no guests offered: no room to grow either
    arch_el = chosen.find("arch")
    arch = arch_el.get("name") if arch_el is not None else None
    types = [d.get("type", "") for d in chosen.findall("arch/domain")]
    if accel is not None:
        domain_type = ACCELERATORS[accel]
        if domain_type not in types:
            raise InvalidSpec(f"?accel={accel}: this host offers no {accel.upper()} guests "
                              f"(it offers: {', '.join(types) or 'none'})")
    elif "kvm" in types:
        domain_type = "kvm"
    elif "qemu" in types:
        domain_type = "qemu"
    else:
        domain_type = types[0] if types else "qemu"
    efi = False
    cpu_model = None
    if domain_type in ("kvm", "qemu"):
        try:
            domcaps = ET.fromstring(  # noqa: S314 - XML from the daemon
                conn.getDomainCapabilities(None, arch, None, domain_type, 0)
            )
            efi = any(v.text == "efi" for v in domcaps.findall("os/enum[@name='firmware']/value"))
            cpu_model = _baseline_model(domcaps)
        except libvirt.libvirtError:
            efi = False
    info = conn.getInfo()  # [model, memory MiB, cpus, ...]: the ceiling of live growth
    return HostChoices(domain_type=domain_type, arch=arch, machine=None, efi=efi,
                       cpu_model=cpu_model, host_cpus=int(info[2]), host_memory_mib=int(info[1]))


# Named models that give guests the x86-64-v2 level (SSE4.2, POPCNT, CX16) that current
# distributions require, without tying a VM to this host's exact CPU. Oldest first: the
# oldest usable one migrates to the most hosts.
BASELINE_MODELS = ("Nehalem", "Nehalem-IBRS", "Westmere", "Westmere-IBRS")


def _baseline_model(domcaps: ET.Element) -> str | None:
    """The first baseline model the host can run (``usable='yes'`` in its domain capabilities).

    None when there is none, as under some nested KVMs that offer only pentium-class models:
    then the hypervisor default (qemu64) is used, which every host accepts."""
    usable = {m.text for m in domcaps.findall("cpu/mode[@name='custom']/model[@usable='yes']")}
    return next((m for m in BASELINE_MODELS if m in usable), None)
