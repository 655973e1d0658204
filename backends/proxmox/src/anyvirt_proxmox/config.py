"""VM configuration: anyvirt specs to PVE config keys and back, and PVE's naming rules.

PVE config values are property strings (``virtio=BC:24:11:00:00:01,bridge=vmbr0``,
``local-lvm:vm-101-disk-0,size=1G``). What a caller gives is checked against
PVE's own rules here, before any request: VM names are DNS names, snapshot
names are config ids, vmids are 100 to 999999999, descriptions at most 8192
characters. Values travel as form fields, which the HTTP layer encodes.
"""

from __future__ import annotations

import re
from typing import Any

from anyvirt.errors import InvalidSpec
from anyvirt.model import MIB, DiskInfo, DiskSpec, Firmware, NicInfo, NicSpec, VMSpec

# PVE's dns-name format: labels of letters, digits and inner hyphens, joined by dots
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
DNS_NAME = re.compile(rf"^(?:{_LABEL}\.)*{_LABEL}$")
CONFIG_ID = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]+$")  # pve-configid: snapshot names
MAX_SNAPSHOT_NAME = 40
MAX_DESCRIPTION = 8192
MIN_VMID, MAX_VMID = 100, 999_999_999
MIN_MEMORY_MIB = 16
DRIVE_KEY = re.compile(r"^(ide|sata|scsi|virtio)(\d+)$")
NET_KEY = re.compile(r"^net(\d+)$")
BUS_LIMITS = {"ide": 4, "sata": 6, "scsi": 31, "virtio": 16}
NIC_MODELS = ("virtio", "e1000", "e1000e", "vmxnet3", "rtl8139")
DEFAULT_BUS = "scsi"
SIZE_UNITS = {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB, "T": 1024 * 1024 * MIB}
OSTYPES = ("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11",
           "l24", "l26", "solaris")
LINUX_WORDS = ("linux", "debian", "ubuntu", "centos", "fedora", "rhel", "rocky", "alma", "suse",
               "arch", "alpine")


# ---------------------------------------------------------------- caller's input
def check_vm_name(name: str) -> str:
    """PVE keeps a VM name only if it is a DNS name: refuse anything else, before any request."""
    if not DNS_NAME.match(name):
        raise InvalidSpec(
            f"VM name {name!r} is not a DNS-style name, which Proxmox VE requires: letters, digits "
            "and hyphens, in dot-separated labels that start and end with a letter or digit"
        )
    return name


def check_snapshot_name(name: str) -> str:
    if len(name) > MAX_SNAPSHOT_NAME or not CONFIG_ID.match(name):
        raise InvalidSpec(
            f"snapshot name {name!r} is not one Proxmox VE accepts: a letter, then at least one "
            f"letter, digit, '-' or '_', at most {MAX_SNAPSHOT_NAME} characters"
        )
    if name == "current":  # the "you are here" row of PVE's snapshot listing: PVE refuses it
        raise InvalidSpec("snapshot name 'current' is reserved by Proxmox VE (it names the "
                          "VM's present state in the snapshot listing)")
    return name


def check_description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise InvalidSpec(f"the description is {len(text)} characters; "
                          f"Proxmox VE keeps at most {MAX_DESCRIPTION}")
    return text


def vmid(vm_id: object) -> int:
    """A vmid from a caller: a whole number in PVE's range, else InvalidSpec."""
    text = str(vm_id)
    if isinstance(vm_id, bool) or not re.fullmatch(r"[0-9]+", text):
        raise InvalidSpec(f"a Proxmox VE vmid is a positive whole number, not {vm_id!r}")
    value = int(text)
    if not MIN_VMID <= value <= MAX_VMID:
        raise InvalidSpec(f"vmid {value} is outside Proxmox VE's range {MIN_VMID}-{MAX_VMID}")
    return value


def looks_like_vmid(ref: str) -> bool:
    """Refs made of digits (or a sign and digits) are ids, not names: PVE names are DNS names."""
    return re.fullmatch(r"[+-]?[0-9]+", ref) is not None


# ---------------------------------------------------------------- property strings
def split_props(value: str) -> tuple[str | None, dict[str, str]]:
    """``"a,b=1,c=2"`` -> ("a", {"b": "1", "c": "2"}); the first bare word is the default key's."""
    first: str | None = None
    props: dict[str, str] = {}
    for part in str(value).split(","):
        if not part:
            continue
        key, eq, val = part.partition("=")
        if eq:
            props[key] = val
        elif first is None:
            first = part
    return first, props


def parse_size(text: str | None) -> int | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text or "")
    if match is None:
        return None
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def gib_text(size_gib: float) -> str:
    """A size in GiB as PVE's new-disk syntax takes it (``storage:0.0625``)."""
    text = f"{size_gib:.6f}".rstrip("0").rstrip(".")
    return text or "0"


# ---------------------------------------------------------------- config -> facts
def disk_infos(config: dict[str, Any]) -> tuple[DiskInfo, ...]:
    out = []
    for key in sorted(config, key=_natural):
        match = DRIVE_KEY.match(key)
        if match is None:
            continue
        volume, props = _drive(config[key])
        if props.get("media") == "cdrom" or volume in ("none", "cdrom", ""):
            continue
        storage, _, volname = volume.partition(":")
        out.append(DiskInfo(
            id=key, size_bytes=parse_size(props.get("size")), path=volume,
            format=_volume_format(volname), bus=match.group(1), storage=storage or None,
            backing=_base_of(storage, volname),
        ))
    return tuple(out)


def nic_infos(config: dict[str, Any]) -> tuple[NicInfo, ...]:
    out = []
    for key in sorted(config, key=_natural):
        if not NET_KEY.match(key):
            continue
        model, mac, props = _nic(config[key])
        out.append(NicInfo(id=key, network=props.get("bridge"), mac=mac.lower() if mac else None,
                           model=model))
    return tuple(out)


def smbios_uuid(config: dict[str, Any]) -> str | None:
    _, props = split_props(str(config.get("smbios1", "")))
    return props.get("uuid")


def firmware(config: dict[str, Any]) -> Firmware:
    return Firmware.EFI if config.get("bios") == "ovmf" else Firmware.BIOS


def guest_os(config: dict[str, Any]) -> str:
    ostype = str(config.get("ostype", "other"))
    if ostype.startswith("l"):
        return "linux"
    if ostype.startswith("w"):
        return "windows"
    return ostype


def cpus(config: dict[str, Any]) -> int:
    if config.get("vcpus"):
        return int(config["vcpus"])
    return int(config.get("cores", 1)) * int(config.get("sockets", 1))


def memory_mib(config: dict[str, Any]) -> int:
    """``memory`` is a property string whose default key is ``current`` (``"512"``, ``"current=512"``)."""
    first, props = split_props(str(config.get("memory", "512")))
    return int(props.get("current", first or 512))


def _drive(value: object) -> tuple[str, dict[str, str]]:
    first, props = split_props(str(value))
    return (first if first is not None else props.pop("file", "")), props


def _nic(value: object) -> tuple[str | None, str | None, dict[str, str]]:
    model = mac = None
    _, props = split_props(str(value))
    for key in list(props):
        if key in NIC_MODELS or key.startswith(("e1000", "i8255", "ne2k", "pcnet")):
            model, mac = key, props.pop(key)
            break
    model = props.pop("model", model)
    mac = props.pop("macaddr", mac)
    return model, mac, props


def _volume_format(volname: str) -> str:
    for fmt in ("qcow2", "vmdk", "raw"):
        if volname.endswith("." + fmt):
            return fmt
    return "raw"


def _base_of(storage: str, volname: str) -> str | None:
    """A linked clone's volume on file storage is named ``base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2``
    (or ``100/base-...``): the part before the clone's own name is its base."""
    match = re.match(r"^(?:\d+/)?(base-\d+-disk-\d+(?:\.\w+)?)/", volname)
    return f"{storage}:{match.group(1)}" if match else None


def _natural(key: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\D+)(\d+)", key)
    return (match.group(1), int(match.group(2))) if match else (key, 0)


# ---------------------------------------------------------------- spec -> config
def ostype(word: str) -> str:
    low = word.lower()
    if low in OSTYPES:
        return low
    if any(w in low for w in LINUX_WORDS):
        return "l26"
    if low.startswith("win"):
        return "win11"
    return "other"


def check_spec(spec: VMSpec) -> None:
    """What PVE would refuse in a spec besides its name (the gate checks that through
    ``Driver.check_vm_name``), found before any request."""
    check_description(spec.description)
    if spec.memory_mib < MIN_MEMORY_MIB:
        raise InvalidSpec(f"Proxmox VE gives a VM at least {MIN_MEMORY_MIB} MiB, not {spec.memory_mib}")
    counts: dict[str, int] = {}
    for disk in spec.disks:
        bus = disk.bus or DEFAULT_BUS
        if bus not in BUS_LIMITS:
            raise InvalidSpec(f"Proxmox VE has no {bus!r} disks; use one of {', '.join(BUS_LIMITS)}")
        counts[bus] = counts.get(bus, 0) + 1
        if counts[bus] > BUS_LIMITS[bus]:
            raise InvalidSpec(f"Proxmox VE takes at most {BUS_LIMITS[bus]} {bus} disks")
    if len(spec.nics) > 32:
        raise InvalidSpec("Proxmox VE takes at most 32 NICs")
    for nic in spec.nics:
        if nic.model is not None and nic.model not in NIC_MODELS:
            raise InvalidSpec(f"NIC model {nic.model!r} is not one of {', '.join(NIC_MODELS)}")


def drive_keys(disks: tuple[DiskSpec, ...]) -> list[str]:
    counts: dict[str, int] = {}
    keys = []
    for disk in disks:
        bus = disk.bus or DEFAULT_BUS
        keys.append(f"{bus}{counts.get(bus, 0)}")
        counts[bus] = counts.get(bus, 0) + 1
    return keys


def nic_value(nic: NicSpec, bridge: str) -> str:
    model = nic.model or "virtio"
    head = f"{model}={nic.mac.upper()}" if nic.mac else model
    return f"{head},bridge={bridge}"
