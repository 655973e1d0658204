"""The streamOptimized VMDK encoder, read back by the real qemu-img (and by a reader of the
stream in order, as VMware's importer reads it), on small sparse images in a temporary dir."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pytest
from anyvirt_virtualbox.testbed import build_chroot, served_home

from anyvirt.errors import InvalidSpec, TaskFailed
from anyvirt.kit import image_maps, qemu_img
from anyvirt.kit.stream_vmdk import (
    GRAIN_RECORD,
    GRAIN_SIZE,
    READS_IN_FLIGHT,
    StreamOptimizedEncoder,
    grain_runs,
)
from anyvirt.kit.streams import MeteredReader

MIB = 1024 * 1024
SECTOR = 512


def make_raw(path: Path, size: int, writes: list[tuple[int, bytes]]) -> list[tuple[int, int]]:
    """A sparse raw file of ``size`` bytes holding ``writes``; returns their extents."""
    with path.open("wb") as handle:
        handle.truncate(size)
        for offset, data in writes:
            handle.seek(offset)
            handle.write(data)
    return [(offset, len(data)) for offset, data in writes]


def encode(encoder: StreamOptimizedEncoder, out: Path, read_size: int = 100_000) -> Path:
    with out.open("wb") as handle:
        while chunk := encoder.read(read_size):
            handle.write(chunk)
    return out


def qemu_info(path: Path) -> dict[str, object]:
    found = subprocess.run(["qemu-img", "info", "--output=json", "-f", "vmdk", str(path)],
                           check=True, capture_output=True, timeout=60, text=True)
    data: dict[str, object] = json.loads(found.stdout)
    return data


def assert_reads_back(raw: Path, vmdk: Path, size: int, encoder: StreamOptimizedEncoder,
                      raw_format: str = "raw") -> None:
    """The checks every encoded disk passes: length, qemu-img check/info/compare, in-order read."""
    assert vmdk.stat().st_size == encoder.length
    subprocess.run(["qemu-img", "check", "-f", "vmdk", str(vmdk)], check=True,
                   capture_output=True, timeout=60)
    facts = qemu_info(vmdk)
    assert facts["format"] == "vmdk" and facts["virtual-size"] == -(-size // SECTOR) * SECTOR
    specific = facts["format-specific"]
    assert isinstance(specific, dict) and specific["data"]["create-type"] == "streamOptimized"
    assert qemu_img.compare(raw, vmdk, first_format=raw_format, second_format="vmdk")
    assert read_in_order(vmdk) == raw_bytes(raw, raw_format, size)


def raw_bytes(path: Path, fmt: str, size: int) -> dict[int, bytes]:
    """The non-zero 64 KiB grains of a disk (grain index -> bytes)."""
    if fmt != "raw":
        converted = path.with_suffix(".check.raw")
        qemu_img.convert(path, converted, source_format=fmt, format="raw")
        path = converted
    grains = {}
    with path.open("rb") as handle:
        for index in range(-(-size // GRAIN_SIZE)):
            data = handle.read(GRAIN_SIZE).ljust(GRAIN_SIZE, b"\0")
            if data.count(0) != GRAIN_SIZE:
                grains[index] = data
    return grains


def read_in_order(vmdk: Path) -> dict[int, bytes]:
    """Decode the stream front to back, never seeking back, as a streaming importer does,
    and check its order: grains by rising LBA, each grain table after its grains, then the
    directory, the footer (with the directory's real offset) and the end-of-stream marker."""
    data = vmdk.read_bytes()
    magic, version, flags, capacity, grain, desc_at, desc_size, gtes, _, gd_at, overhead = \
        struct.unpack_from("<4sIIQQQQIQQQ", data)
    assert (magic, version, flags, grain, desc_at, gtes) == (b"KDMV", 3, 0x30001, 128, 1, 512)
    assert gd_at == 0xFFFF_FFFF_FFFF_FFFF and overhead == 1 + desc_size
    assert b'createType="streamOptimized"' in data[SECTOR:overhead * SECTOR]
    position, grains, last_lba, seen_tables = overhead * SECTOR, {}, -1, []
    pending: dict[int, int] = {}  # grain index -> sector of its marker, not yet in a table
    while True:
        lba, size = struct.unpack_from("<QI", data, position)
        if size:  # a grain
            assert lba > last_lba and lba % grain == 0
            last_lba = lba
            grains[lba // grain] = zlib.decompress(data[position + 12: position + 12 + size])
            pending[lba // grain] = position // SECTOR
            position += -(-(12 + size) // SECTOR) * SECTOR
            continue
        kind = struct.unpack_from("<I", data, position + 12)[0]
        body = data[position + SECTOR: position + SECTOR + lba * SECTOR]
        if kind == 1:  # a grain table: exactly the grains since the last one
            entries = struct.unpack(f"<{gtes}I", body)
            table = min(pending) // gtes
            assert {table * gtes + i: e for i, e in enumerate(entries) if e} == pending
            seen_tables.append((table, position // SECTOR + 1))
            pending = {}
        elif kind == 2:  # the directory
            assert not pending
            directory = struct.unpack_from(f"<{-(-capacity // (gtes * grain))}I", body)
            assert {i: e for i, e in enumerate(directory) if e} == dict(seen_tables)
            directory_at = position // SECTOR + 1
        elif kind == 3:  # the footer: the header again, with the directory's offset
            assert struct.unpack_from("<Q", body, 56)[0] == directory_at
            assert body[:56] == data[:56]
        else:
            assert kind == 0 and lba == 0 and position + SECTOR == len(data)
            break
        position += SECTOR + lba * SECTOR
    return {index: grain_data for index, grain_data in grains.items()
            if grain_data.count(0) != GRAIN_SIZE}


# ------------------------------------------------------------------ disks
def test_half_random_then_zeros(tmp_path: Path) -> None:
    size = 8 * MIB
    extents = make_raw(tmp_path / "d.raw", size, [(0, os.urandom(4 * MIB))])
    encoder = StreamOptimizedEncoder(tmp_path / "d.raw", size, extents)
    assert encoder.grains == 64
    assert_reads_back(tmp_path / "d.raw", encode(encoder, tmp_path / "d.vmdk"), size, encoder)


def test_scattered_small_unaligned_extents(tmp_path: Path) -> None:
    size = 3 * MIB
    writes = [(12345, os.urandom(100)), (65535, b"\x01"), (131000, os.urandom(5000)),
              (2 * MIB + 7, os.urandom(70000)), (size - 3, b"end")]
    extents = make_raw(tmp_path / "d.raw", size, writes)
    encoder = StreamOptimizedEncoder(tmp_path / "d.raw", size, extents)
    # 12345 and 65535 share grain 0; 131000..136000 spans grains 1-2; 70000 bytes span 2 grains
    assert grain_runs(extents, size) == [(0, 3), (32, 34), (47, 48)]
    assert_reads_back(tmp_path / "d.raw", encode(encoder, tmp_path / "d.vmdk", 4096), size,
                      encoder)


def test_size_not_a_multiple_of_a_grain(tmp_path: Path) -> None:
    size = MIB + 4096 + 512  # the last grain is 4.5 KiB of disk, padded with zeros
    extents = make_raw(tmp_path / "d.raw", size, [(MIB - 10, os.urandom(4096 + 522))])
    encoder = StreamOptimizedEncoder(tmp_path / "d.raw", size, extents)
    assert encoder.grains == 2
    vmdk = encode(encoder, tmp_path / "d.vmdk")
    assert_reads_back(tmp_path / "d.raw", vmdk, size, encoder)  # the virtual size is exact


def test_empty_disk_sends_only_metadata(tmp_path: Path) -> None:
    size = 16 * MIB
    make_raw(tmp_path / "d.raw", size, [])
    encoder = StreamOptimizedEncoder(tmp_path / "d.raw", size, [])
    assert encoder.grains == 0 and encoder.length <= 8 * SECTOR
    assert_reads_back(tmp_path / "d.raw", encode(encoder, tmp_path / "d.vmdk"), size, encoder)


def test_several_grain_tables_and_a_missing_one(tmp_path: Path) -> None:
    size = 80 * MIB  # three grain tables of 32 MiB; the middle one holds nothing
    writes = [(0, os.urandom(1000)), (32 * MIB - 100, os.urandom(200)),
              (70 * MIB, os.urandom(3 * GRAIN_SIZE)), (size - 512, os.urandom(512))]
    extents = make_raw(tmp_path / "d.raw", size, writes[:1] + writes[2:])
    encoder = StreamOptimizedEncoder(tmp_path / "d.raw", size, extents)
    assert encoder.tables == 3 and encoder.present_tables == 2
    assert_reads_back(tmp_path / "d.raw", encode(encoder, tmp_path / "d.vmdk"), size, encoder)
    # and with the table-crossing write too: grains 511 and 512 sit in tables 0 and 1
    make_raw(tmp_path / "e.raw", size, writes)
    encoder = StreamOptimizedEncoder(tmp_path / "e.raw", size, [(w[0], len(w[1])) for w in writes])
    assert encoder.present_tables == 3
    assert_reads_back(tmp_path / "e.raw", encode(encoder, tmp_path / "e.vmdk"), size, encoder)


def test_virtualbox_reads_it_too(tmp_path: Path) -> None:
    """A second, independent reader: VirtualBox 7.2's own VMDK code (the testbed's real
    VBoxManage) converts the stream back to raw, byte for byte."""
    size = 80 * MIB
    writes = [(4096, os.urandom(3 * MIB)), (70 * MIB + 1, os.urandom(GRAIN_SIZE)),
              (size - 100, os.urandom(100))]
    extents = make_raw(tmp_path / "d.raw", size, writes)
    encoder = StreamOptimizedEncoder(tmp_path / "d.raw", size, extents, adapter_type="ide")
    assert encoder.present_tables == 2  # the middle 32 MiB has no grain table
    vmdk = encode(encoder, tmp_path / "d.vmdk")
    with served_home(build_chroot(), tmp_path / "vbox") as home:
        home.run("clonemedium", "disk", str(vmdk), str(tmp_path / "back.raw"), "--format", "RAW")
    assert (tmp_path / "back.raw").read_bytes() == (tmp_path / "d.raw").read_bytes()


def test_qcow2_through_its_map_and_a_raw_copy(tmp_path: Path) -> None:
    size = 40 * MIB
    make_raw(tmp_path / "seed.raw", size,
             [(0, os.urandom(MIB)), (5 * MIB + 3, os.urandom(10)), (33 * MIB, os.urandom(MIB))])
    image = tmp_path / "d.qcow2"
    qemu_img.convert(tmp_path / "seed.raw", image, source_format="raw", format="qcow2")
    extents = image_maps.data_extents(image, "qcow2", granularity=GRAIN_SIZE)
    assert sum(length for _, length in extents) == 2 * MIB + GRAIN_SIZE
    qemu_img.convert(image, tmp_path / "view.raw", source_format="qcow2", format="raw")
    encoder = StreamOptimizedEncoder(tmp_path / "view.raw", size, extents)
    vmdk = encode(encoder, tmp_path / "d.vmdk")
    assert_reads_back(image, vmdk, size, encoder, raw_format="qcow2")


def test_qcow2_read_straight_from_its_file_through_its_layout(tmp_path: Path) -> None:
    """An uncompressed qcow2's data sits in the file where ``qemu-img map`` says: the
    encoder reads it there (no decoder, no copy), zeros where nothing is mapped; a
    compressed qcow2 has no such layout."""
    size = 40 * MIB + 4096
    make_raw(tmp_path / "seed.raw", size,
             [(0, os.urandom(MIB + 7)), (5 * MIB + 3, os.urandom(10)),
              (33 * MIB - 100, os.urandom(MIB)), (size - 5, b"tail!")])
    image = tmp_path / "d.qcow2"
    qemu_img.convert(tmp_path / "seed.raw", image, source_format="raw", format="qcow2")
    found = image_maps.data_map(image, "qcow2", granularity=GRAIN_SIZE)
    assert found.layout and all(host > 0 for _, _, host in found.layout)
    encoder = StreamOptimizedEncoder(image, size, found.extents, layout=found.layout)
    vmdk = encode(encoder, tmp_path / "d.vmdk")
    assert_reads_back(image, vmdk, size, encoder, raw_format="qcow2")
    packed = tmp_path / "c.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(tmp_path / "seed.raw"),
                    str(packed)], check=True)
    assert image_maps.data_map(packed, "qcow2").layout is None


def test_a_layout_past_the_file_stops_the_stream(tmp_path: Path) -> None:
    source = tmp_path / "short.img"
    source.write_bytes(os.urandom(GRAIN_SIZE))
    encoder = StreamOptimizedEncoder(source, 4 * GRAIN_SIZE, [(0, 2 * GRAIN_SIZE)],
                                     layout=[(0, 2 * GRAIN_SIZE, 0)])
    with pytest.raises(TaskFailed, match="ends before"):
        encode(encoder, tmp_path / "out.vmdk")
    with pytest.raises(InvalidSpec, match="out of order"):
        StreamOptimizedEncoder(source, 4 * GRAIN_SIZE, [], layout=[(GRAIN_SIZE, 10, 0), (0, 10, 0)])


def test_bytes_on_the_wire_near_the_allocated_data(tmp_path: Path) -> None:
    size = 64 * MIB
    make_raw(tmp_path / "d.raw", size, [(0, os.urandom(32 * MIB))])
    extents = image_maps.data_extents(tmp_path / "d.raw", "raw")
    allocated = sum(length for _, length in extents)
    assert allocated == 32 * MIB
    encoder = StreamOptimizedEncoder(tmp_path / "d.raw", size, extents)
    assert encoder.length <= 1.01 * allocated
    # the metadata: header + descriptor, one grain table (marker + 4), the directory
    # (marker + 1), the footer (marker + header) and the end-of-stream marker
    assert encoder.length == encoder.grains * GRAIN_RECORD + (2 + 5 + 2 + 2 + 1) * SECTOR


def test_memory_stays_one_chunk(tmp_path: Path) -> None:
    size = 64 * MIB
    extents = make_raw(tmp_path / "d.raw", size, [(0, os.urandom(48 * MIB))])
    encoder = StreamOptimizedEncoder(tmp_path / "d.raw", size, extents)
    tracemalloc.start()
    try:
        sent = 0
        while chunk := encoder.read(256 * 1024):
            sent += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sent == encoder.length
    # a ~1 MiB chunk buffer per read in flight and one handed out, and the pieces handed
    # out: not the disk
    assert peak < (READS_IN_FLIGHT + 3) * MIB


def test_metered_upload_body_and_disk_digest(tmp_path: Path) -> None:
    size = 4 * MIB
    payload = os.urandom(MIB + 5)
    extents = make_raw(tmp_path / "d.raw", size, [(MIB, payload)])
    encoder = StreamOptimizedEncoder(tmp_path / "d.raw", size, extents, hash_disk=True)
    body = MeteredReader(encoder, encoder.length)  # what an HTTP PUT reads
    first = b"".join(iter(lambda: body.read(8192), b""))
    assert body.transfer is not None and body.transfer.bytes == len(first) == encoder.length
    digest = hashlib.sha256((tmp_path / "d.raw").read_bytes()).hexdigest()
    assert encoder.disk_sha256 == digest
    encoder.rewind()  # a retried upload sends the same bytes again
    assert encoder.disk_sha256 is None
    assert encoder.read(encoder.length) == first
    assert encoder.disk_sha256 == digest  # known without reading past the declared length
    assert encoder.read() == b""
    encoder.close()


def test_an_image_smaller_than_its_disk_reads_as_zeros_past_its_end(tmp_path: Path) -> None:
    size = 2 * MIB  # a 1.5 MiB image grown to 2 MiB on import; the source holds more bytes
    make_raw(tmp_path / "source.raw", size, [(0, os.urandom(size))])
    encoder = StreamOptimizedEncoder(tmp_path / "source.raw", size, [(0, size)],
                                     source_size=MIB + MIB // 2 + 100, hash_disk=True)
    vmdk = encode(encoder, tmp_path / "d.vmdk")
    expected = tmp_path / "expected.raw"
    make_raw(expected, size, [(0, (tmp_path / "source.raw").read_bytes()[: MIB + MIB // 2 + 100])])
    assert_reads_back(expected, vmdk, size, encoder)
    assert encoder.disk_sha256 == hashlib.sha256(expected.read_bytes()).hexdigest()


# ------------------------------------------------------------------ refusals
def test_a_source_shorter_than_its_map_says_stops_the_stream(tmp_path: Path) -> None:
    make_raw(tmp_path / "short.raw", MIB, [(0, os.urandom(MIB))])
    encoder = StreamOptimizedEncoder(tmp_path / "short.raw", 4 * MIB, [(0, 4 * MIB)])
    with pytest.raises(TaskFailed, match="ends at byte 1048576"):
        encode(encoder, tmp_path / "d.vmdk", 65536)
    assert (tmp_path / "d.vmdk").stat().st_size < encoder.length  # no zeros sent for data


def test_a_missing_source_is_a_typed_error(tmp_path: Path) -> None:
    encoder = StreamOptimizedEncoder(tmp_path / "gone.raw", MIB, [(0, 512)])
    assert len(encoder.read(encoder.overhead * SECTOR)) == 2 * SECTOR  # needs no source
    with pytest.raises(TaskFailed, match=r"gone\.raw"):
        encoder.read(SECTOR)


@pytest.mark.parametrize(("extents", "kwargs", "message"), [
    ([(MIB - 10, 11)], {}, "outside"),
    ([(-1, 10)], {}, "outside"),
    ([(0, 1.5)], {}, "integers"),
    ([], {"adapter_type": "pvscsi"}, "adapter type"),
    ([], {"name": 'x" RW 1 FLAT "/etc/shadow'}, "name"),
    ([], {"name": "../x"}, "name"),
])
def test_bad_arguments_are_refused_before_streaming(tmp_path: Path, extents: list[tuple[int, int]],
                                                    kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        StreamOptimizedEncoder(tmp_path / "d.raw", MIB, extents, **kwargs)  # type: ignore[arg-type]


def test_too_large_for_uint32_sector_offsets(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="too large"):
        StreamOptimizedEncoder(tmp_path / "d.raw", 4 << 40, [(0, 4 << 40)])


# ------------------------------------------------------------------ data_extents
def test_data_extents_leaves_out_holes_and_zero_clusters(tmp_path: Path) -> None:
    image = tmp_path / "d.qcow2"
    qemu_img.create(image, "qcow2", 10 * MIB)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 64k 128k", "-c",
                    "write -P 2 192k 64k", "-c", "write -z 1M 64k", "-c", "write -P 3 3M 4k",
                    str(image)], check=True, capture_output=True, timeout=60)
    assert image_maps.data_extents(image, "qcow2") == [(65536, 196608), (3 * MIB, 65536)]
    assert image_maps.data_extents(image, "qcow2", granularity=MIB) == [(0, MIB), (3 * MIB, MIB)]


def test_data_extents_widened_past_the_end_are_cut_at_it(tmp_path: Path) -> None:
    size = MIB + 4096
    make_raw(tmp_path / "d.raw", size, [(MIB, b"x" * 4096)])
    assert image_maps.data_extents(tmp_path / "d.raw", "raw", granularity=GRAIN_SIZE) == [
        (MIB, 4096)]


def test_map_output_parsed_in_any_chunking_and_refused_when_garbled() -> None:
    # qemu-img 7.2's map of a qcow2 (the shape is stable across versions)
    text = (b'[{ "start": 0, "length": 65536, "depth": 0, "present": false, "zero": true, '
            b'"data": false},\n{ "start": 65536, "length": 65536, "depth": 0, "present": true, '
            b'"zero": false, "data": true, "offset": 327680},\n{ "start": 131072, "length": '
            b'65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 393216}'
            b']\n')
    for step in (1, 7, len(text)):
        assert parse_map(text, step) == [(65536, 131072)]
    for garbled in (b'{"start": 5}\n', b'{"start": 0, "length": -1, "zero": false, "data": true}\n',
                    b"x" * 5000):
        with pytest.raises(InvalidSpec):
            parse_map(garbled, 1000)


def parse_map(text: bytes, step: int) -> list[tuple[int, int]]:
    reader = image_maps._MapReader("test", 1)
    for at in range(0, len(text), step):
        reader.feed(text[at: at + step])
    return reader.finish()
