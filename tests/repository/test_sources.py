"""Reading a disk for a backup: only the chunks holding data are read, from any format."""

from __future__ import annotations

from pathlib import Path

import pytest
from repo_helpers import MIB, image, pattern

from anyvirt.kit import qemu_img
from anyvirt.model import ExportedDisk
from anyvirt.repository.sources import open_raw
from anyvirt.tasks import Job

CHUNK = 4 * MIB


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "compressed-qcow2"])
def test_only_data_chunks_are_read_and_they_hold_the_guest_bytes(tmp_path: Path, fmt: str) -> None:
    data = pattern(5, 3 * MIB)
    raw = image(tmp_path / "d.raw", 64 * MIB, [(10 * MIB, data)])
    path, kind = raw, "raw"
    if fmt != "raw":
        path, kind = tmp_path / "d.qcow2", "qcow2"
        options = ["-c"] if fmt == "compressed-qcow2" else []
        qemu_img.run(["convert", *options, "-f", "raw", "-O", "qcow2", "--", str(raw), str(path)],
                     what="test image", timeout=60)
    disk = ExportedDisk(id="disk0", path=str(path), format=kind, size_bytes=64 * MIB)
    with open_raw(disk, CHUNK, tmp_path, Job("test")) as view:
        chunks = list(view.chunks(CHUNK))
        assert len(chunks) == 16
        assert [offset for offset, _, has in chunks if has] == [8 * MIB, 12 * MIB]
        with open(view.path, "rb") as handle:
            got = view.read(handle.fileno(), 8 * MIB, 8 * MIB)
    assert got == bytes(2 * MIB) + data + bytes(3 * MIB)


def test_an_image_with_a_backing_file_is_refused(tmp_path: Path) -> None:
    base = image(tmp_path / "base.raw", 8 * MIB, [(0, b"secret")])
    top = tmp_path / "top.qcow2"
    qemu_img.run(["create", "-f", "qcow2", "-F", "raw", "-b", str(base), "--", str(top)],
                 what="test image", timeout=60)
    disk = ExportedDisk(id="disk0", path=str(top), format="qcow2", size_bytes=8 * MIB)
    with pytest.raises(Exception, match="backing"), open_raw(disk, CHUNK, tmp_path, Job("test")):
        pass
