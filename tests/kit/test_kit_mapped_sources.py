"""A chain's data read where its layers hold it: the layers' own maps (real qemu-img over
real qcow2 files) composed as QEMU reads the chain, and the reads that follow."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from anyvirt.errors import TaskFailed
from anyvirt.kit import image_maps, mapped_sources, qemu_img
from anyvirt.kit.image_maps import MapRange

MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(not qemu_img.available(), reason="needs qemu-img")


def _io(path: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], check=True,
                   capture_output=True)


def _layer(path: Path) -> dict[str, object]:
    return {"driver": "qcow2", "file": {"driver": "file", "filename": str(path)},
            "backing": None}


def _reader(path: Path) -> Callable[[int, int], bytes]:
    def read_at(offset: int, length: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    return read_at


def test_a_chain_reads_as_qemu_reads_it(tmp_path: Path) -> None:
    """A base with data at 0-2 MiB and 4-5 MiB; an overlay that writes 1-2 MiB anew and
    zeroes 4-5 MiB (a zero cluster hiding the base's data) and writes 8 MiB on: the
    composed pieces give, read through, exactly what qemu-img reads of the chain."""
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    _io(base, "write -P 0x11 0 2M")
    _io(base, "write -P 0x22 4M 1M")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(top)], check=True)
    _io(top, "write -P 0x33 1M 1M")
    _io(top, "write -z 4M 1M")
    _io(top, "write -P 0x44 8M 512k")
    pieces = mapped_sources.chain_pieces([image_maps.map_ranges(_layer(p)) for p in (top, base)])
    assert pieces is not None
    assert [(g, n, layer) for g, n, layer, _host in pieces] == [
        (0, MIB, 1), (MIB, MIB, 0), (8 * MIB, MIB // 2, 0)]
    source = mapped_sources.MappedSource(pieces, [_reader(top), _reader(base)])
    flat = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(top), str(flat)], check=True)
    expected = flat.read_bytes()
    got = bytearray(16 * MIB)
    for offset in range(0, 16 * MIB, 3 * MIB):  # reads across piece edges
        length = min(3 * MIB, 16 * MIB - offset)
        source.read_into(memoryview(got)[offset:offset + length], offset)
    assert got == expected
    whole = source.read(MIB + 4096, memoryview(bytearray(4096)))  # inside one piece
    assert whole.obj is not None and bytes(whole) == expected[MIB + 4096:MIB + 8192]
    across = source.read(MIB - 100, memoryview(bytearray(200)))  # two layers: copied
    assert bytes(across) == expected[MIB - 100:MIB + 100]


def test_data_without_a_place_in_the_file_maps_to_none() -> None:
    """A compressed cluster (data with no offset) in any layer: no pieces, the caller reads
    the chain through its decoder."""
    top = [MapRange(0, MIB, True, True, False, 4096)]
    base = [MapRange(0, 2 * MIB, True, True, False, None)]
    assert mapped_sources.chain_pieces([top, base]) is None
    hidden = [MapRange(0, 2 * MIB, True, False, True, None)]  # zeros on top hide it all
    assert mapped_sources.chain_pieces([hidden, base]) == []
    unsaid = [MapRange(0, MIB, None, True, False, 4096)]  # an old qemu-img: no 'present'
    assert mapped_sources.chain_pieces([unsaid]) is None


def test_a_short_read_of_a_layer_is_an_error() -> None:
    source = mapped_sources.MappedSource([(0, 100, 0, 0)], [lambda offset, length: b"x" * 10])
    with pytest.raises(TaskFailed):
        source.read_into(memoryview(bytearray(100)), 0)
    with pytest.raises(TaskFailed):
        source.read(0, memoryview(bytearray(100)))


def test_a_view_is_registered_while_its_block_lasts(tmp_path: Path) -> None:
    view = tmp_path / "raw"
    view.touch()
    source = mapped_sources.MappedSource([], [])
    assert mapped_sources.source_for(view) is None
    with mapped_sources.registered({str(view): source}):
        assert mapped_sources.source_for(os.fspath(view)) is source
    assert mapped_sources.source_for(view) is None
