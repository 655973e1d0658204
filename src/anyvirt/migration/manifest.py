"""The backup manifest: what an archive declares, checked field by field before it is believed.

An archive comes from anywhere. Every value its manifest holds is checked
here, typed and bounded, before any of it reaches a host: a wrong field is an
``InvalidSpec`` that names it (``disks[1].size_bytes``), never a KeyError or
TypeError from deep inside a restore. The checked result is a small frozen
:class:`Manifest`, so the restore code reads attributes, not dict keys.

Format 2 adds what format 1 lacked: the sha256 and stored size of every disk
member, the anyvirt version that wrote it, the source platform's raw facts,
and whether snapshots were flattened. Format 1 archives still load (with
``checksums=False``) so old backups stay restorable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from attrs import frozen

from anyvirt.errors import InvalidSpec
from anyvirt.kit import qemu_img

FORMAT_V1 = "anyvirt-backup/1"
FORMAT_V2 = "anyvirt-backup/2"
FORMATS = (FORMAT_V1, FORMAT_V2)

MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"  # "<sha256 hex>  <size>\n" of manifest.json, format 2

# Bounds a real VM stays far inside; anything past them is a crafted archive.
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_DISK_BYTES = 64 * 1024**4  # 64 TiB: the largest VMDK ESXi accepts is 62 TiB
MAX_DISKS = 64
MAX_NICS = 64
MAX_CPUS = 4096
MAX_MEMORY_MIB = 24 * 1024 * 1024  # 24 TiB
MAX_TEXT = 4096
# a compressed qcow2 of incompressible data is slightly larger than the disk itself
MAX_OVERHEAD = 64 * 1024**2

_MEMBER = re.compile(r"^disks/[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
SNAPSHOT_MODES = ("flattened",)  # the current state only; "tree" is for a later format


@frozen
class ManifestNic:
    id: str | None
    network: str | None
    model: str | None
    mac: str | None


@frozen
class ManifestDisk:
    id: str
    file: str  # the archive member holding it
    format: str  # qemu-img format of that member
    size_bytes: int  # the virtual size the guest sees
    bus: str | None
    file_bytes: int | None  # the member's stored size (format 2)
    sha256: str | None  # of the member's bytes (format 2)


@frozen
class Manifest:
    format: str
    name: str
    cpus: int
    memory_mib: int
    firmware: str
    guest_os: str
    description: str
    nics: tuple[ManifestNic, ...]
    disks: tuple[ManifestDisk, ...]
    created: str | None = None
    anyvirt_version: str | None = None
    source_backend: str | None = None
    snapshots: str = "flattened"

    @property
    def checksums(self) -> bool:
        """Whether the archive carries sha256 sums (format 2) or not (format 1)."""
        return self.format == FORMAT_V2

    @property
    def disk_bytes(self) -> int:
        return sum(d.size_bytes for d in self.disks)


class _Reader:
    """Typed access to one JSON object, naming the field in every complaint."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise InvalidSpec(f"manifest field {where or 'top level'}: expected an object, "
                              f"got {_kind(data)}")
        self.data = data
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, required: bool = True) -> Any:
        if key not in self.data:
            if required:
                raise InvalidSpec(f"manifest field {self._path(key)} is missing")
            return None
        return self.data[key]

    def text(self, key: str, required: bool = True, empty: bool = True) -> str | None:
        value = self.get(key, required)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise InvalidSpec(f"manifest field {self._path(key)}: expected text, got {_kind(value)}")
        if len(value) > MAX_TEXT or "\0" in value or (not empty and not value):
            raise InvalidSpec(f"manifest field {self._path(key)}: empty, too long or holds NUL")
        return value

    def integer(self, key: str, low: int, high: int, required: bool = True) -> int | None:
        value = self.get(key, required)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidSpec(f"manifest field {self._path(key)}: expected an integer, "
                              f"got {_kind(value)}")
        if not low <= value <= high:
            raise InvalidSpec(f"manifest field {self._path(key)}: {value} is outside {low}..{high}")
        return value

    def items(self, key: str, limit: int) -> list[_Reader]:
        value = self.get(key, required=False)
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidSpec(f"manifest field {self._path(key)}: expected a list, got {_kind(value)}")
        if len(value) > limit:
            raise InvalidSpec(f"manifest field {self._path(key)}: {len(value)} entries, at most {limit}")
        return [_Reader(item, f"{self._path(key)}[{i}]") for i, item in enumerate(value)]


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def parse(data: object) -> Manifest:
    """Check a decoded manifest; raises ``InvalidSpec`` naming the first bad field."""
    top = _Reader(data, "")
    fmt = top.text("format")
    if fmt not in FORMATS:
        raise InvalidSpec(f"manifest field format: {fmt!r} is not one of {', '.join(FORMATS)}")
    v2 = fmt == FORMAT_V2
    vm = _Reader(top.get("vm"), "vm")
    source = _Reader(top.get("source"), "source") if v2 or "source" in top.data else None
    firmware = vm.text("firmware", required=False) or "bios"
    if firmware not in ("bios", "efi"):
        raise InvalidSpec(f"manifest field vm.firmware: {firmware!r} is not bios or efi")
    snapshots = "flattened"
    if v2:
        snapshots = str(_Reader(top.get("snapshots"), "snapshots").text("mode"))
        if snapshots not in SNAPSHOT_MODES:
            raise InvalidSpec(f"manifest field snapshots.mode: {snapshots!r} is not one of "
                              f"{', '.join(SNAPSHOT_MODES)}")
    disks = tuple(_disk(d, v2) for d in top.items("disks", MAX_DISKS))
    files = [d.file for d in disks]
    if len(set(files)) != len(files):
        raise InvalidSpec("manifest field disks: two disks name the same file")
    return Manifest(
        format=fmt,
        name=str(vm.text("name", empty=False)),
        cpus=int(vm.integer("cpus", 1, MAX_CPUS) or 1),
        memory_mib=int(vm.integer("memory_mib", 1, MAX_MEMORY_MIB) or 1),
        firmware=firmware,
        guest_os=vm.text("guest_os", required=False) or "other",
        description=vm.text("description", required=False) or "",
        nics=tuple(_nic(n) for n in vm.items("nics", MAX_NICS)),
        disks=disks,
        created=top.text("created", required=False),
        anyvirt_version=top.text("anyvirt_version", required=v2),
        source_backend=source.text("backend", required=v2) if source is not None else None,
        snapshots=snapshots,
    )


def _disk(entry: _Reader, v2: bool) -> ManifestDisk:
    file = str(entry.text("file"))
    if not _MEMBER.match(file) or ".." in file:
        raise InvalidSpec(f"manifest field {entry.where}.file: {file[:80]!r} is not a member "
                          "name like disks/0-disk0.qcow2")
    fmt = str(entry.text("format"))
    if fmt not in qemu_img.FORMATS:
        raise InvalidSpec(f"manifest field {entry.where}.format: {fmt[:20]!r} is not one of "
                          f"{', '.join(qemu_img.FORMATS)}")
    size = int(entry.integer("size_bytes", 1, MAX_DISK_BYTES) or 0)
    file_bytes = sha = None
    if v2:
        file_bytes = entry.integer("file_bytes", 0, size + size // 100 + MAX_OVERHEAD)
        sha = str(entry.text("sha256"))
        if not _SHA256.match(sha):
            raise InvalidSpec(f"manifest field {entry.where}.sha256: not a lowercase sha256 hex")
    return ManifestDisk(
        id=str(entry.text("id", empty=False)), file=file, format=fmt, size_bytes=size,
        bus=entry.text("bus", required=False), file_bytes=file_bytes, sha256=sha,
    )


def _nic(entry: _Reader) -> ManifestNic:
    mac = entry.text("mac", required=False)
    if mac is not None and not _MAC.match(mac):
        raise InvalidSpec(f"manifest field {entry.where}.mac: {mac[:40]!r} is not a MAC address")
    return ManifestNic(
        id=entry.text("id", required=False), network=entry.text("network", required=False),
        model=entry.text("model", required=False), mac=mac,
    )


def parse_sum(text: bytes) -> tuple[str, int]:
    """``manifest.sha256``: the manifest's sha256 and size."""
    try:
        digest, size = text.decode("ascii").split()
        if _SHA256.match(digest) and size.isdigit():
            return digest, int(size)
    except (UnicodeDecodeError, ValueError):
        pass
    raise InvalidSpec(f"{MANIFEST_SUM} is not '<sha256> <size>'")


__all__ = ["FORMATS", "FORMAT_V1", "FORMAT_V2", "MANIFEST", "MANIFEST_SUM", "Manifest",
           "ManifestDisk", "ManifestNic", "parse", "parse_sum"]
