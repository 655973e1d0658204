"""VirtualBox's own settings files: the bulk source for listing many VMs.

``$VBOX_USER_HOME/VirtualBox.xml`` registers every VM by UUID and the path of
its ``.vbox`` file; a ``.vbox`` file holds the VM's name, CPUs, memory,
saved-state file, ``aborted`` flag, extra data and snapshot tree. VBoxSVC
writes them on every change, so reading them costs no process however many
VMs there are. Only facts VirtualBox itself keeps there are read; whether a
VM runs is not among them (``list runningvms`` says that).

These are the host's own configuration files, never files an image or
archive names; a file that cannot be read or parsed is simply not used (the
caller then asks ``showvminfo``).
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import attrs

NS = {"vb": "http://www.virtualbox.org/"}
TEMPLATE_KEY = "anyvirt/template"
DISK_ONLY_PREFIX = "anyvirt/disk-only-snapshot/"


def _uuid(value: str | None) -> str:
    return (value or "").strip("{}").lower()


def registered_machines(home: Path) -> dict[str, Path]:
    """UUID -> ``.vbox`` path, from the registry in ``VirtualBox.xml`` ({} when unreadable)."""
    root = _read(home / "VirtualBox.xml")
    if root is None:
        return {}
    out = {}
    for entry in root.iterfind(".//vb:MachineRegistry/vb:MachineEntry", NS):
        src = entry.get("src")
        if src:
            path = Path(src)
            out[_uuid(entry.get("uuid"))] = path if path.is_absolute() else home / path
    return out


@attrs.frozen
class SnapshotFacts:
    uuid: str
    name: str
    description: str
    created: datetime | None
    parent: str | None
    has_state: bool  # taken of a running VM: its memory was saved


@attrs.frozen
class MachineFacts:
    """What a ``.vbox`` file says about one VM."""

    uuid: str
    name: str
    cpus: int
    memory_mib: int
    saved: bool
    aborted: bool
    description: str = ""
    extra: dict[str, str] = attrs.field(factory=dict, eq=False)
    snapshots: tuple[SnapshotFacts, ...] = ()
    current_snapshot: str | None = None

    @property
    def template(self) -> bool:
        return self.extra.get(TEMPLATE_KEY) == "1"


def machine_facts(path: Path) -> MachineFacts | None:
    """Read one ``.vbox`` file (None when it cannot be read or is not a machine)."""
    root = _read(path)
    if root is None:
        return None
    machine = root.find("vb:Machine", NS)
    if machine is None:
        return None
    hardware = machine.find("vb:Hardware", NS)
    cpus = memory = None
    if hardware is not None:
        cpu = hardware.find("vb:CPU", NS)
        mem = hardware.find("vb:Memory", NS)
        cpus = _int(cpu.get("count") if cpu is not None else None, 1)
        memory = _int(mem.get("RAMSize") if mem is not None else None, 0)
    extra = {
        item.get("name", ""): item.get("value", "")
        for item in machine.iterfind("vb:ExtraData/vb:ExtraDataItem", NS)
    }
    snapshots: list[SnapshotFacts] = []
    first = machine.find("vb:Snapshot", NS)
    if first is not None:
        _walk_snapshots(first, None, snapshots)
    current = machine.get("currentSnapshot")
    description = machine.find("vb:Description", NS)
    return MachineFacts(
        uuid=_uuid(machine.get("uuid")),
        name=machine.get("name", ""),
        cpus=cpus or 1,
        memory_mib=memory or 0,
        saved=bool(machine.get("stateFile")),
        aborted=machine.get("aborted") == "true",
        description=(description.text or "") if description is not None else "",
        extra=extra,
        snapshots=tuple(snapshots),
        current_snapshot=_uuid(current) if current else None,
    )


def _walk_snapshots(node: ET.Element, parent: str | None, out: list[SnapshotFacts]) -> None:
    uuid = _uuid(node.get("uuid"))
    desc = node.find("vb:Description", NS)
    out.append(
        SnapshotFacts(
            uuid=uuid,
            name=node.get("name", ""),
            description=(desc.text or "") if desc is not None else "",
            created=_time(node.get("timeStamp")),
            parent=parent,
            has_state=bool(node.get("stateFile")),
        )
    )
    for child in node.iterfind("vb:Snapshots/vb:Snapshot", NS):
        _walk_snapshots(child, uuid, out)


def _read(path: Path) -> ET.Element | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        return ET.fromstring(data)  # noqa: S314 - see the module docstring
    except ET.ParseError:
        return None


def _int(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return None
