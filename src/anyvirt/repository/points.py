"""Restore points: what a backup leaves, and how it is stored and checked.

A point is one object, ``points/<id>``, written last: until it is there the
backup did not happen. It holds the VM's neutral hardware description (the
same manifest a portable archive carries, checked by the same parser), the
source's facts, and per disk the name and sha256 of its index. An index
(``indexes/<point id>/<n>``) lists the disk's chunk ids in order, 32 bytes
each, all-zero bytes for a chunk of zeros (never stored). In the manifest a
disk's ``sha256`` is the sha256 of that index: since every chunk is named by
the hash of its bytes, it pins every byte of the disk.

A point's id starts with its time (ids sort oldest first) and ends with the
id of the lease that wrote it, so the leftovers of a cut backup are known by
name.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from attrs import field, frozen

from anyvirt.errors import InvalidSpec
from anyvirt.migration import manifest as manifests

FORMAT = "anyvirt-repository-point/1"
ID_BYTES = 32
ZERO_ID = bytes(ID_BYTES)
_POINT_ID = re.compile(r"^\d{8}T\d{6}\d{6}Z-[0-9a-f]{16}$")


@frozen
class RestorePoint:
    """One backup of one VM in a repository."""

    id: str
    vm_name: str
    vm_id: str
    created: dt.datetime
    incremental: bool  # an earlier point of this VM was there to build on
    read_bytes: int  # read from the source's disks
    stored_bytes: int  # added to the repository: new chunks and the indexes (compressed)
    source_backend: str = ""
    size_bytes: int = 0  # the disks' total virtual size
    manifest: dict[str, Any] = field(factory=dict, repr=False, eq=False)
    disks: tuple[dict[str, Any], ...] = field(default=(), repr=False, eq=False)


def point_id(created: dt.datetime, lease_id: str) -> str:
    return f"{created.strftime('%Y%m%dT%H%M%S%f')}Z-{lease_id}"


def is_id(text: str) -> bool:
    return bool(_POINT_ID.match(text))


def check_id(text: str) -> str:
    if not isinstance(text, str) or not _POINT_ID.match(text):
        raise InvalidSpec(f"{str(text)[:80]!r} is not a restore point id")
    return text


def lease_of(point: str) -> str:
    return point.rsplit("-", 1)[-1]


def object_name(point: str) -> str:
    return f"points/{point}"


def index_name(point: str, n: int) -> str:
    return f"indexes/{point}/{n}"


def encode(point: RestorePoint) -> bytes:
    body = {
        "format": FORMAT, "id": point.id, "vm_name": point.vm_name, "vm_id": point.vm_id,
        "created": point.created.isoformat(), "incremental": point.incremental,
        "read_bytes": point.read_bytes, "stored_bytes": point.stored_bytes,
        "source_backend": point.source_backend, "size_bytes": point.size_bytes,
        "manifest": point.manifest, "disks": list(point.disks),
    }
    return json.dumps(body, sort_keys=True).encode()


def decode(point_name: str, data: bytes) -> RestorePoint:
    """A point as stored, checked: the manifest by the archive's own parser, the rest here."""
    try:
        body = json.loads(data)
        if body["format"] != FORMAT or body["id"] != point_name:
            raise InvalidSpec(f"point {point_name}: wrong format or id")
        manifest = body["manifest"]
        checked = manifests.parse(manifest)
        disks = tuple(body["disks"])
        if len(disks) != len(checked.disks):
            raise InvalidSpec(f"point {point_name}: {len(disks)} indexes for "
                              f"{len(checked.disks)} disks")
        for n, (disk, entry) in enumerate(zip(disks, checked.disks, strict=True)):
            if disk["index"] != index_name(point_name, n) or \
                    disk["sha256"] != entry.sha256 or int(disk["chunk_size"]) <= 0:
                raise InvalidSpec(f"point {point_name}: disk {entry.id} names a wrong index")
        return RestorePoint(
            id=point_name, vm_name=str(body["vm_name"]), vm_id=str(body["vm_id"]),
            created=dt.datetime.fromisoformat(body["created"]),
            incremental=bool(body["incremental"]), read_bytes=int(body["read_bytes"]),
            stored_bytes=int(body["stored_bytes"]), source_backend=str(body["source_backend"]),
            size_bytes=int(body["size_bytes"]), manifest=manifest, disks=disks)
    except InvalidSpec:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidSpec(f"point {point_name} is malformed ({type(exc).__name__}: {exc})") from None


def chunk_ids(index: bytes) -> list[str | None]:
    """An index's chunk ids in order; None for a chunk of zeros."""
    if len(index) % ID_BYTES:
        raise InvalidSpec("an index is not a whole number of chunk ids")
    out: list[str | None] = []
    for i in range(0, len(index), ID_BYTES):
        raw = index[i:i + ID_BYTES]
        out.append(None if raw == ZERO_ID else raw.hex())
    return out


__all__ = ["RestorePoint", "chunk_ids", "decode", "encode"]
