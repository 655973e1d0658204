"""Domain XML: built from a VMSpec with xml.etree, and read back into VMInfo.

User values (name, description, guest OS) only ever become element text or
attribute values through ElementTree, which escapes them; file paths are
chosen by anyvirt (volume names derive from the VM's UUID, never its name).
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from attrs import frozen

from anyvirt.model import DiskInfo, Firmware, NicInfo, PowerState, VMInfo, VMSpec
from anyvirt_libvirt.disks import DomainDisk, parse_disks

#: anyvirt's own metadata namespace inside <metadata>
NS = "https://anyvirt.dev/xmlns/libvirt/1"
ET.register_namespace("anyvirt", NS)

#: device name prefix per disk bus
_DEV_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


@frozen
class DiskPlan:
    """A disk as it goes into the XML: a volume path anyvirt created."""

    path: str
    bus: str = "virtio"
    format: str = "qcow2"


#: NicSpec.network naming QEMU's user-mode NAT, and the prefix naming a host bridge
USER_NETWORK = "user"
BRIDGE_PREFIX = "bridge:"
#: a macvtap NIC on a host device ("direct:eth0"), and a tap device QEMU is handed
#: ("ethernet", or "ethernet:tap0" for a named one)
DIRECT_PREFIX = "direct:"
ETHERNET = "ethernet"
#: the network a NicSpec without one goes to (QEMU's user-mode NAT where it does not exist)
DEFAULT_NETWORK = "default"
#: user alias (libvirt wants the "ua-" prefix) of a user-mode NIC standing in for "default"
_DEFAULT_ALIAS = "ua-anyvirt-default"


@frozen
class NicPlan:
    """A NIC as it goes into the XML: on a libvirt network, a host bridge, or QEMU's
    user-mode NAT (``kind="user"``, no source: needs nothing set up on the host;
    ``source`` is then the network name it stands in for, "user" or "default")."""

    kind: str  # "network" | "bridge" | "user" | "direct" | "ethernet"
    source: str
    model: str = "virtio"
    mac: str | None = None


@frozen
class HostChoices:
    """What this host offers, decided once per connection from its capabilities."""

    domain_type: str  # kvm | qemu | test
    arch: str | None = None
    machine: str | None = None
    efi: bool = False
    cpu_model: str | None = None  # None: the hypervisor's default model
    #: the host's size: the ceiling of the room left for live growth (0: no room)
    host_cpus: int = 0
    host_memory_mib: int = 0


#: a new VM's maximum memory, as a multiple of its memory. 1: no room above it. A guest
#: without a balloon driver (the demo guest, firmware, many appliances) runs with the
#: maximum, so any room would let VMs take more than they were given and more than the
#: overcommit guard reserved; live memory changes balloon down and back up to it instead
MEMORY_ROOM_FACTOR = 1


def vcpu_room(cpus: int, host: HostChoices) -> int:
    """The maximum vCPUs of a VM with ``cpus``: every host CPU, so CPUs hot-plug live."""
    return max(cpus, host.host_cpus)


def memory_room_mib(memory_mib: int, host: HostChoices) -> int:
    """The maximum memory of a VM with ``memory_mib``: the balloon grows it live up to this."""
    return max(memory_mib, min(host.host_memory_mib, MEMORY_ROOM_FACTOR * memory_mib))


def device_names(buses: list[str]) -> list[str]:
    """vda, vdb, sda, ... in order, per bus prefix."""
    counters: dict[str, int] = {}
    names = []
    for bus in buses:
        prefix = _DEV_PREFIX[bus]
        index = counters.get(prefix, 0)
        counters[prefix] = index + 1
        names.append(prefix + _letters(index))
    return names


def _letters(index: int) -> str:
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(ord("a") + rem) + out
    return out


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def build_domain_xml(
    spec: VMSpec,
    uuid: str,
    host: HostChoices,
    disks: list[DiskPlan],
    nics: list[NicPlan],
    console_log: str | None,
) -> str:
    """The persistent definition of a new VM."""
    dom = ET.Element("domain", {"type": host.domain_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", uuid)
    if spec.description:
        _sub(dom, "description", spec.description)
    metadata = _sub(dom, "metadata")
    ET.SubElement(metadata, f"{{{NS}}}vm", {"guest-os": spec.guest_os})
    # room to grow live: <vcpu current=N>MAX</vcpu> hot-plugs CPUs, and <memory> above
    # <currentMemory> lets the balloon give the guest more (see vcpu_room, memory_room_mib)
    _sub(dom, "memory", str(memory_room_mib(spec.memory_mib, host) * 1024), unit="KiB")
    _sub(dom, "currentMemory", str(spec.memory_mib * 1024), unit="KiB")
    vcpu = _sub(dom, "vcpu", str(vcpu_room(spec.cpus, host)), placement="static")
    vcpu.set("current", str(spec.cpus))

    os_el = _sub(dom, "os")
    if spec.firmware is Firmware.EFI:
        os_el.set("firmware", "efi")
    type_attrs = {}
    if host.arch:
        type_attrs["arch"] = host.arch
    if host.machine:
        type_attrs["machine"] = host.machine
    _sub(os_el, "type", "hvm", **type_attrs)
    _sub(os_el, "boot", dev="hd")

    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    # A named baseline model the host reports usable (see hostfacts.BASELINE_MODELS), else
    # no <cpu>: the hypervisor's default (qemu64) is accepted everywhere, including nested
    # KVM where host-model fails. Neither ties the VM to this host's CPU, so both migrate.
    if host.cpu_model:
        cpu = _sub(dom, "cpu", mode="custom", match="exact", check="none")
        _sub(cpu, "model", host.cpu_model, fallback="forbid")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    for plan, dev in zip(disks, device_names([d.bus for d in disks]), strict=True):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=plan.format)
        _sub(disk, "source", file=plan.path)
        _sub(disk, "target", dev=dev, bus=plan.bus)
    for index, nic in enumerate(nics):
        iface = _sub(devices, "interface", type=nic.kind)
        if nic.mac:
            _sub(iface, "mac", address=nic.mac)
        if nic.kind == "direct":
            _sub(iface, "source", dev=nic.source, mode="bridge")
        elif nic.kind == "ethernet":
            if nic.source:  # a tap device that exists already on the host
                _sub(iface, "target", dev=nic.source, managed="no")
        elif nic.kind != "user":
            _sub(iface, "source", **{nic.kind: nic.source})
        _sub(iface, "model", type=nic.model)
        if nic.kind == "user" and nic.source == DEFAULT_NETWORK:
            # asked for "default" and given user-mode NAT: the alias lets info() say "default"
            _sub(iface, "alias", name=f"{_DEFAULT_ALIAS}{index}")
    if host.domain_type != "test":
        serial = _sub(devices, "serial", type="pty")
        if console_log:
            # QEMU itself appends the guest's serial output to this file
            # (stdio_handler="file" or virtlogd: both honour <log>)
            _sub(serial, "log", file=console_log, append="on")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="serial", port="0")
    return ET.tostring(dom, encoding="unicode")


# ---------------------------------------------------------------- reading back


def parse_vm_info(
    xml: str,
    state: PowerState,
    raw_state: str,
    node: str | None,
    volumes: dict[str, tuple[int | None, str | None, str | None]] | None = None,
    resolved: list[DomainDisk] | None = None,
) -> VMInfo:
    """A VMInfo from a domain's XML; ``volumes`` maps disk path -> (capacity, pool, backing),
    ``resolved`` are its disks with volume disks resolved to their paths."""
    root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon, not from users
    volumes = volumes or {}
    # memory_mib is the current size (what the guest has now, what the listing says);
    # the maximum it may grow to live is kept in extra
    max_kib = int(root.findtext("memory") or "0")
    cpus, memory_kib = current_size(root)
    vcpu = root.find("vcpu")
    max_cpus = int(vcpu.text or "1") if vcpu is not None else 1
    os_el = root.find("os")
    firmware = Firmware.BIOS
    if os_el is not None and (
        os_el.get("firmware") == "efi"
        or (os_el.find("loader") is not None and os_el.find("nvram") is not None)
    ):
        firmware = Firmware.EFI
    meta = root.find(f"metadata/{{{NS}}}vm")
    guest_os = meta.get("guest-os", "other") if meta is not None else "other"
    disks = []
    for disk in resolved if resolved is not None else parse_disks(xml):
        if disk.device != "disk":
            continue
        capacity, pool, backing = volumes.get(disk.path or "", (None, None, None))
        disks.append(
            DiskInfo(
                id=disk.dev,
                size_bytes=capacity,
                path=disk.path,
                format=disk.format,
                bus=disk.bus,
                storage=pool or disk.pool,
                backing=backing or disk.backing,
            )
        )
    nics = []
    for index, iface in enumerate(root.findall("devices/interface")):
        source = iface.find("source")
        network = None
        kind = iface.get("type")
        if kind == "direct" and source is not None:
            network = f"{DIRECT_PREFIX}{source.get('dev', '')}"
        elif kind == "ethernet":
            tap = iface.find("target[@managed='no']")  # a tap of the host's, not one libvirt made
            named = tap.get("dev") if tap is not None else None
            network = f"{ETHERNET}:{named}" if named else ETHERNET
        elif kind == "user":
            alias = iface.find("alias")
            stood_in = alias is not None and alias.get("name", "").startswith(_DEFAULT_ALIAS)
            network = DEFAULT_NETWORK if stood_in else USER_NETWORK
        elif source is not None and source.get("bridge"):
            # spelled as NicSpec takes it, so info() -> spec round-trips (clone, backup)
            network = f"{BRIDGE_PREFIX}{source.get('bridge')}"
        elif kind == "network" and source is not None:
            network = source.get("network")
        elif kind and source is not None:
            # vhostuser, udp, mcast, hostdev, ...: named by type and endpoint, so a clone
            # or restore that cannot make one refuses it instead of guessing
            where = source.get("dev") or source.get("path") or source.get("address")
            network = f"{kind}:{where}" if where else kind
        mac = iface.find("mac")
        model = iface.find("model")
        target = iface.find("target")
        nics.append(
            NicInfo(
                id=(target.get("dev") if target is not None else None) or f"net{index}",
                network=network,
                mac=mac.get("address") if mac is not None else None,
                model=model.get("type") if model is not None else None,
            )
        )
    extra: dict[str, object] = {
        "domain_type": root.get("type"),
        "memory_max_mib": max_kib // 1024,
        "max_cpus": max_cpus,
    }
    log = console_log_path(root)
    if log:
        extra["console_log"] = log
    meta = root.find(f"metadata/{{{NS}}}vm")
    if meta is not None and meta.get("stale"):
        # set on first contact after another host recovered this VM (anyvirt_libvirt.definitions)
        extra["stale_copy"] = meta.get("stale")
    return VMInfo(
        id=root.findtext("uuid") or "",
        name=root.findtext("name") or "",
        state=state,
        raw_state=raw_state,
        cpus=cpus,
        memory_mib=memory_kib // 1024,
        node=node,
        firmware=firmware,
        guest_os=guest_os,
        description=root.findtext("description") or "",
        disks=tuple(disks),
        nics=tuple(nics),
        template=is_template(root),
        extra=extra,
    )


def is_template(root: ET.Element) -> bool:
    meta = root.find(f"metadata/{{{NS}}}vm")
    return meta is not None and meta.get("template") == "yes"


def console_log_path(root: ET.Element) -> str | None:
    log = root.find("devices/serial/log")
    return log.get("file") if log is not None else None


def current_size(root: ET.Element) -> tuple[int, int]:
    """(vCPUs, memory in KiB) a defined domain starts with: ``<vcpu current>`` and
    ``<currentMemory>`` (what ``dom.info()`` says of a shut-off domain)."""
    memory_kib = int(root.findtext("currentMemory") or root.findtext("memory") or "0")
    vcpu = root.find("vcpu")
    max_cpus = int(vcpu.text or "1") if vcpu is not None else 1
    cpus = int(vcpu.get("current") or max_cpus) if vcpu is not None else 1
    return cpus, memory_kib


#: the prefix libvirt gives the MACs it generates for QEMU (``mac_prefix`` in qemu.conf)
MAC_PREFIX = (0x52, 0x54, 0x00)


def random_mac() -> str:
    """A new MAC as libvirt makes one: its prefix and three random bytes."""
    return ":".join(f"{b:02x}" for b in (*MAC_PREFIX, *secrets.token_bytes(3)))


def rewrite_for_copy(
    xml: str,
    *,
    name: str | None,
    uuid: str | None,
    disk_paths_map: dict[str, str],
    console_log: str | None,
    new_macs: bool,
    macs: Sequence[str] | None = None,
    volume_names: dict[str, str] | None = None,
    own_nvram: bool = False,
    template_mark: bool | None = None,
    linked_clone_of: str | None = None,
) -> str:
    """A domain XML with new identity and disk paths (clone, migration to other storage).

    ``volume_names`` renames ``<disk type='volume'>`` sources (old -> new volume, same
    pool). ``own_nvram`` gives a clone an NVRAM file of its own: the path is dropped
    (libvirt names one after the new domain) and the original's file becomes its
    template, which libvirt copies on the clone's first start."""
    root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
    if name is not None:
        name_el = root.find("name")
        if name_el is not None:
            name_el.text = name
    if uuid is not None:
        uuid_el = root.find("uuid")
        if uuid_el is None:
            uuid_el = ET.SubElement(root, "uuid")
        uuid_el.text = uuid
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        if source is not None and source.get("file") in disk_paths_map:
            source.set("file", disk_paths_map[source.get("file", "")])
            # a copied disk is a fresh file: any recorded backing chain no longer applies
            backing = disk.find("backingStore")
            if backing is not None:
                disk.remove(backing)
        if source is not None and source.get("volume") in (volume_names or {}):
            source.set("volume", (volume_names or {})[source.get("volume", "")])
            backing = disk.find("backingStore")
            if backing is not None:
                disk.remove(backing)
    nvram = root.find("os/nvram")
    if own_nvram and nvram is not None and (nvram.text or "").strip():
        nvram.set("template", (nvram.text or "").strip())
        nvram.text = None
    meta = root.find(f"metadata/{{{NS}}}vm")
    if template_mark is not None or linked_clone_of is not None:
        if meta is None:
            holder = root.find("metadata")
            if holder is None:
                holder = ET.SubElement(root, "metadata")
            meta = ET.SubElement(holder, f"{{{NS}}}vm", {"guest-os": "other"})
        if template_mark is not None:
            meta.attrib.pop("template", None)
            if template_mark:
                meta.set("template", "yes")
        meta.attrib.pop("linked-clone-of", None)
        if linked_clone_of:
            meta.set("linked-clone-of", linked_clone_of)
    if new_macs:
        interfaces = root.findall("devices/interface")
        if macs is not None and len(macs) != len(interfaces):
            raise ValueError("one MAC per NIC")
        for index, iface in enumerate(interfaces):
            mac = iface.find("mac")
            if macs is not None:
                if mac is None:
                    mac = ET.Element("mac")
                    iface.insert(0, mac)
                mac.attrib = {"address": macs[index]}
            elif mac is not None:
                iface.remove(mac)  # libvirt generates a fresh one
            target = iface.find("target")
            if target is not None:
                iface.remove(target)
    for serial in root.findall("devices/serial"):
        log = serial.find("log")
        if log is not None:
            if console_log:
                log.set("file", console_log)
            else:
                serial.remove(log)
        source = serial.find("source")
        if source is not None and serial.get("type") == "pty":
            serial.remove(source)  # the pty path belongs to the old process
    for console in root.findall("devices/console"):
        source = console.find("source")
        if source is not None and console.get("type") == "pty":
            console.remove(source)
    return ET.tostring(root, encoding="unicode")
