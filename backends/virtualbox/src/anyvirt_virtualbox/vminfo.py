"""From ``showvminfo --machinereadable`` to anyvirt's VM facts.

Covers what VirtualBox 4.3 to 7.2 print: storage attachments keyed
``"<controller>-<port>-<device>"`` (with ``-ImageUUID-`` twins, and DVD drives
told apart by their ``.iso`` / ``emptydrive`` value or an ``IsEjected`` key),
NICs as ``nicN`` with their ``natnetN``/``bridgeadapterN``/``hostonlyadapterN``/
``intnetN``/``nat-networkN`` companions, and ``VMState`` words.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from anyvirt.model import DiskInfo, Firmware, NicInfo, PowerState, VMInfo, VMSummary
from anyvirt_virtualbox.machinereadable import Parsed
from anyvirt_virtualbox.settings import MachineFacts

#: VMState words (VBoxManageInfo.cpp, machineStateToName) -> anyvirt states
STATES: dict[str, PowerState] = {
    "poweroff": PowerState.STOPPED,
    "teleported": PowerState.STOPPED,
    "saved": PowerState.SUSPENDED,
    "aborted-saved": PowerState.SUSPENDED,
    "aborted": PowerState.CRASHED,
    "gurumeditation": PowerState.CRASHED,
    "running": PowerState.RUNNING,
    "paused": PowerState.PAUSED,
    "teleportingpausedvm": PowerState.PAUSED,
    "deletingsnapshotlivepaused": PowerState.PAUSED,
    # transient states, reported as the state the VM is in meanwhile
    "starting": PowerState.RUNNING,
    "restoring": PowerState.RUNNING,
    "teleportingin": PowerState.RUNNING,
    "stopping": PowerState.RUNNING,
    "saving": PowerState.RUNNING,
    "teleporting": PowerState.RUNNING,
    "livesnapshotting": PowerState.RUNNING,
    "onlinesnapshotting": PowerState.RUNNING,
    "deletingsnapshotlive": PowerState.RUNNING,
    "snapshotting": PowerState.STOPPED,
    "restoringsnapshot": PowerState.STOPPED,
    "deletingsnapshot": PowerState.STOPPED,
    "settingup": PowerState.STOPPED,
}

#: storage controller types (storagecontrollertypeN) -> anyvirt disk buses
CONTROLLER_BUS: dict[str, str] = {
    "IntelAhci": "sata",
    "PIIX3": "ide",
    "PIIX4": "ide",
    "ICH6": "ide",
    "LsiLogic": "scsi",
    "BusLogic": "scsi",
    "LsiLogicSas": "sas",
    "NVMe": "nvme",
    "VirtioSCSI": "virtio",
    "I82078": "floppy",
    "USB": "usb",
}

#: NIC hardware (nictypeN) -> anyvirt NIC model names, and back for create
NIC_MODELS: dict[str, str] = {
    "82540EM": "e1000",
    "82543GC": "e1000-t",
    "82545EM": "e1000-s",
    "virtio": "virtio",
    "Am79C973": "pcnet",
    "Am79C970A": "pcnet-pci2",
    "Am79C960": "pcnet-isa",
    "usbnet": "usbnet",
}

#: NIC attachment (nicN) -> (anyvirt network prefix, the key naming the network)
NIC_ATTACHMENTS: dict[str, tuple[str, str | None]] = {
    "nat": ("nat", None),
    "bridged": ("bridged", "bridgeadapter"),
    "hostonly": ("hostonly", "hostonlyadapter"),
    "hostonlynet": ("hostonlynet", "hostonly-network"),
    "intnet": ("internal", "intnet"),
    "natnetwork": ("natnetwork", "nat-network"),
    "generic": ("generic", "generic"),
    "null": ("null", None),
    "cloud": ("cloud", "cloud-network"),
}

_ATTACHMENT_KEY = re.compile(r"^(?P<ctl>.+)-(?P<port>\d+)-(?P<dev>\d+)$")


def state_of(raw: str) -> PowerState:
    return STATES.get(raw, PowerState.UNKNOWN)


def format_mac(raw: str) -> str | None:
    """``080027EE1DF7`` -> ``08:00:27:ee:1d:f7``."""
    raw = raw.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{12}", raw):
        return None
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def firmware_of(raw: str) -> Firmware:
    return Firmware.EFI if raw.upper().startswith("EFI") else Firmware.BIOS


@attrs.frozen
class Attachment:
    """A medium attached to a storage controller slot."""

    controller: str
    port: int
    device: int
    path: str
    image_uuid: str | None
    bus: str | None
    dvd: bool

    @property
    def id(self) -> str:
        return f"{self.controller}-{self.port}-{self.device}"


def controllers(info: Parsed) -> dict[str, str]:
    """Controller name -> type (``storagecontrollernameN`` / ``storagecontrollertypeN``)."""
    out = {}
    for key, name in info.values.items():
        if key.startswith("storagecontrollername"):
            index = key[len("storagecontrollername") :]
            out[name] = info.get(f"storagecontrollertype{index}")
    return out


def attachments(info: Parsed) -> list[Attachment]:
    ctls = controllers(info)
    found = []
    keys = list(info.values)
    for pos, key in enumerate(keys):
        m = _ATTACHMENT_KEY.match(key)
        if not m or m["ctl"] not in ctls:
            continue
        path = info.values[key]
        if path in ("none", ""):
            continue
        port, dev = m["port"], m["dev"]
        uuid = info.values.get(f"{m['ctl']}-ImageUUID-{port}-{dev}")
        # a DVD drive: an .iso, an empty drive, or an eject flag right after it
        # (7.x: "-IsEjected-P-D"; 5.x/6.0: a bare "-IsEjected" among the next keys)
        after = keys[pos + 1 : pos + 5]
        dvd = (
            path == "emptydrive"
            or path.lower().endswith((".iso", ".dmg", ".cdr"))
            or f"{m['ctl']}-IsEjected-{port}-{dev}" in info.values
            or any(k == f"{m['ctl']}-IsEjected" for k in after)
        )
        found.append(
            Attachment(
                controller=m["ctl"],
                port=int(port),
                device=int(dev),
                path=path,
                image_uuid=uuid.lower() if uuid else None,
                bus=CONTROLLER_BUS.get(ctls[m["ctl"]]),
                dvd=dvd,
            )
        )
    return found


def nics(info: Parsed) -> list[NicInfo]:
    out = []
    for n in range(1, 37):  # VirtualBox has 8 (36 on ICH9) adapter slots
        kind = info.values.get(f"nic{n}")
        if kind is None:
            if n > 8:
                break
            continue
        if kind == "none":
            continue
        prefix, key = NIC_ATTACHMENTS.get(kind, (kind, None))
        network = prefix
        if key is not None and info.values.get(f"{key}{n}"):
            network = f"{prefix}:{info.values[f'{key}{n}']}"
        model = info.values.get(f"nictype{n}", "")
        out.append(
            NicInfo(
                id=f"nic{n}",
                network=network,
                mac=format_mac(info.get(f"macaddress{n}")),
                model=NIC_MODELS.get(model, model or None),
            )
        )
    return out


def _int(value: str, default: int = 0) -> int:
    try:
        return int(value)
    except ValueError:
        return default


GUEST_OS_TYPES: dict[str, str] = {"other": "Other", "linux": "Linux_64", "windows": "Windows10_64"}
_GUEST_DESCRIPTIONS = {
    "Other/Unknown": "other",
    "Other/Unknown (64-bit)": "other",
    "Other": "other",
    "Other Linux (64-bit)": "linux",
    "Linux 2.6 / 3.x / 4.x / 5.x (64-bit)": "linux",
    "Windows 10 (64-bit)": "windows",
}


def guest_os_of(ostype: str) -> str:
    return _GUEST_DESCRIPTIONS.get(ostype, ostype or "other")


def summary(info: Parsed, node: str, vm_id: str, facts: MachineFacts | None) -> VMSummary:
    """``vm_id`` is the UUID showvminfo was asked about; name, CPUs and memory come from the
    VM's ``.vbox`` file when it could be read, and only the run state from ``info``."""
    raw = info.get("VMState", "unknown")
    return VMSummary(
        id=vm_id,
        name=facts.name if facts else info.get("name"),
        state=state_of(raw),
        raw_state=raw,
        cpus=facts.cpus if facts else _int(info.get("cpus"), 1),
        memory_mib=facts.memory_mib if facts else _int(info.get("memory")),
        node=node,
        template=bool(facts and facts.template),
    )


def vm_info(
    info: Parsed,
    node: str,
    vm_id: str,
    facts: MachineFacts | None,
    settings_file: Path | None,
    disks: tuple[DiskInfo, ...],
) -> VMInfo:
    s = summary(info, node, vm_id, facts)
    template = s.template
    return VMInfo(
        id=s.id,
        name=s.name,
        state=s.state,
        raw_state=s.raw_state,
        cpus=s.cpus,
        memory_mib=s.memory_mib,
        node=node,
        firmware=firmware_of(info.get("firmware", "BIOS")),
        guest_os=guest_os_of(info.get("ostype")),
        description=facts.description if facts else info.get("description"),
        disks=disks,
        nics=tuple(nics(info)),
        template=template,
        extra={
            "config_file": str(settings_file) if settings_file else info.get("CfgFile"),
            "snapshot_folder": info.get("SnapFldr"),
            "ostype": info.get("ostype"),
            "chipset": info.get("chipset"),
        },
    )
