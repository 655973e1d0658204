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


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_the_digest_taken_as_the_encoder_reads_is_the_one_read_afterwards(
        tmp_path: Path, fmt: str) -> None:
    """A streamOptimized encoding of the disk feeds the tap as it reads (through the
    qcow2's layout, or the raw file): its ranges are the 1 MiB map's, its digest what
    reading those ranges again gives, and it is taken without a second read."""
    from anyvirt.kit import image_maps
    from anyvirt.kit.stream_vmdk import GRAIN_SIZE, StreamOptimizedEncoder

    raw, _guest = _disk(tmp_path)
    path = raw
    if fmt == "qcow2":
        path = tmp_path / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "--", str(raw),
                        str(path)], check=True)
    mapped = extent_digest.data_ranges(str(path), fmt, 16 * MIB)
    assert mapped is not None
    ranges, layout = mapped
    grains = image_maps.data_map(str(path), fmt, granularity=GRAIN_SIZE)
    with extent_digest.tapping({str(path): 16 * MIB}) as taps:
        tap = taps[str(path)]
        assert extent_digest.tap_for(str(path)) is tap
        with StreamOptimizedEncoder(path, 16 * MIB, grains.extents, layout=grains.layout) as enc:
            assert tap.taken is None
            while enc.read(1 << 20):
                pass
    assert extent_digest.tap_for(str(path)) is None, "untapped once the block ends"
    assert tap.taken is not None
    assert list(tap.taken.ranges) == extent_digest.merged(ranges)
    assert tap.taken.digest == extent_digest.image_digest(str(path), layout, ranges)


def test_a_pass_read_out_of_order_keeps_nothing() -> None:
    tap = extent_digest.OutboundDigest(4 * MIB)
    tap.begin()
    tap.add(2 * MIB, b"x" * 10)
    tap.add(MIB, b"y")
    tap.end()
    assert tap.taken is None
    tap.begin()
    tap.add(0, b"a")
    tap.add(MIB + 5, b"b")
    tap.add(3 * MIB, b"c")
    tap.end()
    assert tap.taken is not None
    assert tap.taken.ranges == ((0, 2 * MIB), (3 * MIB, MIB))
    block0 = b"a" + bytes(MIB - 1) + bytes(5) + b"b" + bytes(MIB - 6)
    expected = hashlib.sha256(block0 + b"c" + bytes(MIB - 1)).hexdigest()
    assert tap.taken.digest.sha256 == expected
    assert tap.taken.digest.bytes == 3 * MIB


def test_a_verification_uses_the_digest_taken_only_over_the_same_ranges() -> None:
    """The move's check takes the copy's digest of the source only where the copy read
    exactly the ranges the source's map gives now; otherwise it reads the source."""
    from anyvirt.migration import range_check
    from anyvirt.model import ExportedDisk

    source = ExportedDisk(id="d0", path="/nonexistent/view", format="raw", size_bytes=4 * MIB)
    assert range_check._taken_on_the_way_out(source, [(0, MIB)]) is None, "nothing tapped"
    with extent_digest.tapping({source.path: source.size_bytes}) as taps:
        tap = taps[source.path]
        tap.begin()
        tap.add(0, b"z" * 100)
        tap.add(MIB, b"z" * 100)
        tap.end()
        assert tap.taken is not None
        taken = range_check._taken_on_the_way_out(source, [(0, MIB), (MIB, MIB)])
        assert taken == tap.taken.digest
        assert range_check._taken_on_the_way_out(source, [(0, 2 * MIB)]) == taken, "merged"
        assert range_check._taken_on_the_way_out(source, [(0, MIB)]) is None, "a range more"
        assert range_check._taken_on_the_way_out(source, [(0, 3 * MIB)]) is None, "one less"
    assert range_check._taken_on_the_way_out(source, [(0, 2 * MIB)]) is None, "untapped"
