"""The ``VBoxManage list ...`` outputs anyvirt reads, and ``--version``.

``list vms`` and ``list runningvms`` print ``"name" {uuid}`` per line, the name
raw between the quotes (7.2 prints ``"h"o" {...}`` for a name with a quote), so
the name is everything between the first quote and the last ``" {``.
``list hostinfo`` is ``Key: value`` lines; ``list hdds`` and ``list
hostonlyifs`` are records of ``Key:   value`` lines separated by blank lines.
These are English whatever the locale: VBoxManage is run with ``LC_ALL=C.UTF-8``.
"""

from __future__ import annotations

import re

import attrs

from anyvirt.errors import ConnectionFailed
from anyvirt_virtualbox.machinereadable import split_driver_warning

_VM_LINE = re.compile(r'^"(?P<name>.*)" \{(?P<uuid>[0-9a-fA-F-]{36})\}\s*$')
_VERSION = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?P<tail>[^\s]*)$")
_REVISION = re.compile(r"r(?P<rev>\d+)$")


@attrs.frozen
class ListedVM:
    name: str
    uuid: str


def list_vms(text: str) -> list[ListedVM]:
    """``list vms`` / ``list runningvms``: the VMs in the order printed."""
    _, text = split_driver_warning(text)
    out = []
    for line in text.splitlines():
        m = _VM_LINE.match(line)
        if m:
            out.append(ListedVM(name=m["name"], uuid=m["uuid"].lower()))
    return out


def key_values(text: str) -> dict[str, str]:
    """``Key: value`` lines (``list hostinfo``, ``list systemproperties``)."""
    _, text = split_driver_warning(text)
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith((" ", "\t")):
            out.setdefault(key.strip(), value.strip())
    return out


def records(text: str) -> list[dict[str, str]]:
    """Blank-line separated records of ``Key:   value`` lines (``list hdds``, ``list hostonlyifs``)."""
    _, text = split_driver_warning(text)
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                out.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            # the first wins: UUID and Parent UUID come before Location, whose file name a
            # clone's name makes, so a "UUID:" line in it cannot replace them
            current.setdefault(key.strip(), value.strip())
    if current:
        out.append(current)
    return out


@attrs.frozen
class HostFacts:
    cpus: int
    memory_mib: int
    free_memory_mib: int | None
    os: str = ""
    os_version: str = ""


def _leading_int(value: str) -> int | None:
    m = re.match(r"\s*(\d+)", value)
    return int(m.group(1)) if m else None


def host_facts(text: str) -> HostFacts:
    """``list hostinfo``: CPUs online, memory size and available memory (MByte)."""
    kv = key_values(text)
    cpus = _leading_int(kv.get("Processor online count", "")) or _leading_int(kv.get("Processor count", ""))
    memory = _leading_int(kv.get("Memory size", ""))
    if not cpus or not memory:
        raise ConnectionFailed("VBoxManage list hostinfo printed no processor count or memory size")
    return HostFacts(
        cpus=cpus,
        memory_mib=memory,
        free_memory_mib=_leading_int(kv.get("Memory available", "")),
        os=kv.get("Operating system", ""),
        os_version=kv.get("Operating system version", ""),
    )


@attrs.frozen
class Medium:
    """One ``list hdds`` record."""

    uuid: str
    location: str
    format: str
    capacity_mib: int | None
    parent: str | None  # None for a base medium
    state: str = ""
    kind: str = ""  # "Type": "normal (base)", "normal (differencing)", "shareable", ...
    encryption: str = ""  # "disabled", or the cipher of an encrypted medium


def media(text: str) -> list[Medium]:
    out = []
    for rec in records(text):
        if "UUID" not in rec:
            continue
        parent = rec.get("Parent UUID", "base")
        out.append(
            Medium(
                uuid=rec["UUID"].lower(),
                location=rec.get("Location", ""),
                format=rec.get("Storage format", ""),
                capacity_mib=_leading_int(rec.get("Capacity", "")),
                parent=None if parent in ("base", "") else parent.lower(),
                state=rec.get("State", ""),
                kind=rec.get("Type", ""),
                encryption=rec.get("Encryption", ""),
            )
        )
    return out


@attrs.frozen
class HostOnlyInterface:
    name: str
    ip: str = ""
    netmask: str = ""
    mac: str = ""
    status: str = ""


def host_only_interfaces(text: str) -> list[HostOnlyInterface]:
    return [
        HostOnlyInterface(
            name=rec["Name"],
            ip=rec.get("IPAddress", ""),
            netmask=rec.get("NetworkMask", ""),
            mac=rec.get("HardwareAddress", ""),
            status=rec.get("Status", ""),
        )
        for rec in records(text)
        if "Name" in rec
    ]


@attrs.frozen(order=True)
class Version:
    """``7.2.22_Debianr175245`` -> 7.2.22, build tag ``Debian``, revision 175245."""

    major: int
    minor: int
    patch: int
    build: str = attrs.field(default="", order=False)
    revision: int | None = attrs.field(default=None, order=False)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def at_least(self, major: int, minor: int = 0) -> bool:
        return (self.major, self.minor) >= (major, minor)


def parse_version(text: str) -> Version:
    """The version from ``VBoxManage --version`` (the driver warning may come first)."""
    _, text = split_driver_warning(text)
    for line in reversed(text.strip().splitlines()):
        m = _VERSION.match(line.strip())
        if not m:
            continue
        tail = m["tail"]
        rev = _REVISION.search(tail)
        build = tail[: rev.start()] if rev else tail
        return Version(
            major=int(m["major"]),
            minor=int(m["minor"]),
            patch=int(m["patch"]),
            build=build.lstrip("_"),
            revision=int(rev["rev"]) if rev else None,
        )
    raise ConnectionFailed(f"VBoxManage --version printed no version: {text.strip()[:200]!r}")
