"""The digest of a disk's data ranges, read from a raw file and from a qcow2 of the same
disk through its cluster map: both must agree with the guest-visible bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from anyvirt.errors import InvalidSpec
from anyvirt.kit import extent_digest

MIB = 1024 * 1024


def _disk(tmp_path: Path) -> tuple[Path, bytes]:
    raw = tmp_path / "disk.raw"
    data = os.urandom(3 * MIB + 4096)
    with open(raw, "wb") as handle:
        handle.write(data[: MIB + 17])
        handle.seek(9 * MIB + 512)
        handle.write(data[MIB + 17:])
        handle.truncate(16 * MIB)
    return raw, raw.read_bytes()


def test_raw_and_qcow2_digest_the_same_guest_bytes(tmp_path: Path) -> None:
    raw, guest = _disk(tmp_path)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "--", str(raw),
                    str(qcow2)], check=True)
    found = {}
    for path, fmt in ((raw, "raw"), (qcow2, "qcow2")):
        mapped = extent_digest.data_ranges(str(path), fmt, 16 * MIB)
        assert mapped is not None
        ranges, layout = mapped
        found[fmt] = (ranges, extent_digest.image_digest(str(path), layout, ranges))
    ranges, digest = found["raw"]
    assert found["qcow2"][0] == ranges, "one map, whatever the format"
    assert sum(n for _, n in ranges) < 16 * MIB / 2, "the zeros between are left out"
    expected = hashlib.sha256(b"".join(guest[o:o + n] for o, n in ranges)).hexdigest()
    assert digest.sha256 == found["qcow2"][1].sha256 == expected
    assert digest.bytes == sum(n for _, n in ranges)


@pytest.mark.parametrize("ranges", [[(0, 10), (5, 10)], [(0, 0)], [(16 * MIB - 1, 2)]])
def test_a_wrong_range_list_is_refused(ranges: list[tuple[int, int]]) -> None:
    with pytest.raises(InvalidSpec):
        extent_digest.checked_ranges(ranges, 16 * MIB)
