"""Definition records and recovery marks are data another host wrote: read back exactly,
padded or not, and anything else is refused with a typed error."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from anyvirt.errors import InvalidSpec
from anyvirt.recovery import records
from anyvirt.recovery.records import DefinitionRecord, RecoveryMark

WHEN = dt.datetime(2026, 12, 6, 23, 0, 0, tzinfo=dt.UTC)
RECORD = DefinitionRecord(
    vm_id="6f1c0e4e-0000-4000-8000-000000000001", vm_name="web1", backend="libvirt",
    host_id="host-a", hostname="kvm1", host_uri="libvirt+qemu+ssh://kvm1/system", written=WHEN,
    disks=("/srv/shared/web1.qcow2",), definition="<domain><name>web1</name></domain>",
    autostart=True)


def test_a_record_reads_back_as_written_also_padded_to_its_volume() -> None:
    data = records.encode_record(RECORD)
    assert records.decode_record(data, "r") == RECORD
    assert records.decode_record(data.ljust(4096, b" "), "r") == RECORD
    assert "definition=" not in repr(RECORD)  # the XML is long; reprs stay short


def test_a_mark_reads_back_and_says_where_and_when() -> None:
    mark = RecoveryMark(vm_id=RECORD.vm_id, vm_name="web1", failed_host_id="host-a",
                        recovered_on="libvirt+qemu+ssh://kvm2/system", recovered_host_id="host-b",
                        at=WHEN)
    assert records.decode_mark(records.encode_mark(mark), "m") == mark
    assert mark.warning() == "stale copy, recovered on libvirt+qemu+ssh://kvm2/system at 2026-12-06 23:00:00Z"


@pytest.mark.parametrize("change", [
    {"format": "anyvirt-definition-record/0"},
    {"disks": "/etc/passwd"},
    {"disks": [1]},
    {"vm_id": None},
    {"written": "2026-12-06T23:00:00"},  # no time zone
    {"written": "yesterday"},
])
def test_anything_else_is_refused(change: dict[str, object]) -> None:
    body = json.loads(records.encode_record(RECORD))
    body.update(change)
    with pytest.raises(InvalidSpec, match="record"):
        records.decode_record(json.dumps(body).encode(), "the record")


def test_not_json_too_big_or_a_mark_for_a_record_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="not JSON"):
        records.decode_record(b"<domain/>", "r")
    with pytest.raises(InvalidSpec, match="larger"):
        records.decode_record(b" " * (records.MAX_BYTES + 1), "r")
    with pytest.raises(InvalidSpec, match="format"):
        records.decode_mark(records.encode_record(RECORD), "m")
