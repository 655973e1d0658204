"""Definition records: a VM's last known definition, kept where its disks are.

A standalone host's own definitions die with it (libvirt keeps them under
``/etc/libvirt`` of the dead machine), so a backend that can recover keeps a
copy of each definition beside the VM's disks, in the same storage, refreshed
whenever anyvirt defines or changes the VM there. Whatever host reads that
storage can read the record once the first host is gone.

A recovery leaves a *mark* beside the record: which host brought the VM back,
and when. The failed host, when it returns and anyvirt first talks to it, finds
the mark, turns its stale copy's autostart off and labels it.

Both are small JSON documents: data, parsed with checks and a size bound, never
trusted for structure (a record names one VM; its definition is checked by the
backend before anything is defined from it).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from attrs import field, frozen

from anyvirt.errors import InvalidSpec

RECORD_FORMAT = "anyvirt-definition-record/1"
MARK_FORMAT = "anyvirt-recovery-mark/1"
#: a record is a definition plus a few fields; anything bigger is not one of ours
MAX_BYTES = 1024 * 1024


@frozen
class DefinitionRecord:
    """One VM as its host last defined it, written by anyvirt beside its disks."""

    vm_id: str
    vm_name: str
    backend: str
    host_id: str  # the writing host's own id (libvirt: the host UUID)
    hostname: str
    host_uri: str  # the URI anyvirt reached the host by, without secrets
    written: dt.datetime
    disks: tuple[str, ...]  # the disks' paths, as the definition names them
    definition: str = field(repr=False)  # the platform's own definition (libvirt: domain XML)
    autostart: bool = False
    template: bool = False


@frozen
class RecoveryMark:
    """Written when a VM was brought up elsewhere: the failed host's copy is stale."""

    vm_id: str
    vm_name: str
    failed_host_id: str
    recovered_on: str  # the new host's URI (without secrets)
    recovered_host_id: str
    at: dt.datetime

    def warning(self) -> str:
        return f"stale copy, recovered on {self.recovered_on} at {self.at.strftime('%Y-%m-%d %H:%M:%SZ')}"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def encode_record(record: DefinitionRecord) -> bytes:
    return _dump({
        "format": RECORD_FORMAT, "vm_id": record.vm_id, "vm_name": record.vm_name,
        "backend": record.backend, "host_id": record.host_id, "hostname": record.hostname,
        "host_uri": record.host_uri, "written": record.written.isoformat(),
        "disks": list(record.disks), "definition": record.definition,
        "autostart": record.autostart, "template": record.template,
    })


def decode_record(data: bytes, what: str) -> DefinitionRecord:
    body = _load(data, RECORD_FORMAT, what)
    try:
        disks = body["disks"]
        if not isinstance(disks, list) or not all(isinstance(d, str) for d in disks):
            raise TypeError("disks is not a list of paths")
        return DefinitionRecord(
            vm_id=_text(body, "vm_id"), vm_name=_text(body, "vm_name"), backend=_text(body, "backend"),
            host_id=_text(body, "host_id"), hostname=_text(body, "hostname"),
            host_uri=_text(body, "host_uri"), written=_time(body, "written"), disks=tuple(disks),
            definition=_text(body, "definition"), autostart=body.get("autostart") is True,
            template=body.get("template") is True)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidSpec(f"{what} is not a valid definition record ({type(exc).__name__}: {exc})") from None


def encode_mark(mark: RecoveryMark) -> bytes:
    return _dump({
        "format": MARK_FORMAT, "vm_id": mark.vm_id, "vm_name": mark.vm_name,
        "failed_host_id": mark.failed_host_id, "recovered_on": mark.recovered_on,
        "recovered_host_id": mark.recovered_host_id, "at": mark.at.isoformat(),
    })


def decode_mark(data: bytes, what: str) -> RecoveryMark:
    body = _load(data, MARK_FORMAT, what)
    try:
        return RecoveryMark(
            vm_id=_text(body, "vm_id"), vm_name=_text(body, "vm_name"),
            failed_host_id=_text(body, "failed_host_id"), recovered_on=_text(body, "recovered_on"),
            recovered_host_id=_text(body, "recovered_host_id"), at=_time(body, "at"))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidSpec(f"{what} is not a valid recovery mark ({type(exc).__name__}: {exc})") from None


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True).encode()


def _load(data: bytes, fmt: str, what: str) -> dict[str, Any]:
    if len(data) > MAX_BYTES:
        raise InvalidSpec(f"{what} is larger than {MAX_BYTES} bytes: not an anyvirt record")
    try:
        # records are padded with spaces to the volume's size (rewritten in place)
        body = json.loads(data.rstrip(b" \0"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{what} is not JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict) or body.get("format") != fmt:
        raise InvalidSpec(f"{what} is not in the format {fmt}")
    return body


def _text(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not text")
    return value


def _time(body: dict[str, Any], key: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(_text(body, key))
    if value.tzinfo is None:
        raise ValueError(f"{key} has no time zone")
    return value
