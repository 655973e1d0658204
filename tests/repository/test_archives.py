"""The portable archive into and out of a repository, on memory:// VMs with real disk bytes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from repo_helpers import MIB, image, memory_disk, memory_host, memory_vm, pattern

import anyvirt
from anyvirt import AlreadyExists, BackupRepository, InvalidSpec
from anyvirt.migration import backup, verify
from anyvirt.repository import points


@pytest.fixture
def source(tmp_path: Path) -> anyvirt.VM:
    host = memory_host("archives")
    disk = image(tmp_path / "src.raw", 48 * MIB,
                 [(0, pattern(7, 3 * MIB)), (17 * MIB, pattern(8, 6 * MIB)),
                  (40 * MIB, pattern(9, 512 * 1024))])
    return memory_vm(host, "app1", disk)


def _manifest(path: Path) -> dict[str, object]:
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return dict(json.loads(member.read()))


def _indexes(repo: BackupRepository, point: anyvirt.RestorePoint) -> list[bytes]:
    return [repo._index(point, n) for n in range(len(point.disks))]


def test_an_archive_goes_in_and_comes_out_byte_for_byte(source: anyvirt.VM, tmp_path: Path) -> None:
    archive = backup(source, tmp_path / "app1.avbk")
    repo = BackupRepository(tmp_path / "repo")
    imported = repo.import_archive(archive)
    assert imported.vm_name == "app1" and imported.vm_id.startswith("archive:")
    assert [p.id for p in repo.points()] == [imported.id] and repo.verify().ok
    # the point restores the VM's guest bytes exactly
    restored = repo.restore(imported, to=memory_host("t"), name="from-point")
    assert memory_disk(restored) == memory_disk(source)

    out = repo.export_archive(imported, tmp_path / "again.avbk")
    checked = verify(out)  # every sha256 and image, as any archive
    assert [d.size_bytes for d in checked.disks] == [d.size_bytes for d in verify(archive).disks]
    back = memory_host("t2").restore(out, name="from-export")
    assert memory_disk(back) == memory_disk(source)
    # the archive's own facts travel through the repository unchanged
    first, second = (_manifest(p) for p in (archive, out))
    for key in ("vm", "source", "created", "snapshots", "format"):
        assert first[key] == second[key], key

    # and in again: the same chunks (nothing new stored), one VM for retention
    again = repo.import_archive(out)
    assert _indexes(repo, again) == _indexes(repo, imported)
    assert again.vm_id == imported.vm_id and again.incremental
    assert again.stored_bytes < 4096, "only the index is new"


def test_a_damaged_archive_is_refused_and_leaves_no_point(source: anyvirt.VM, tmp_path: Path) -> None:
    archive = backup(source, tmp_path / "app1.avbk")
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("disks/"))
    damaged = tmp_path / "damaged.avbk"
    data = bytearray(archive.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    repo = BackupRepository(tmp_path / "repo")
    with pytest.raises(InvalidSpec, match=r"sha256|checksum"):
        repo.import_archive(damaged)
    assert repo.points() == []
    assert not list((tmp_path / "repo" / "indexes").iterdir()), "no index of a cut import is left"
    assert repo.verify().ok


def test_a_format_1_archive_is_refused(source: anyvirt.VM, tmp_path: Path) -> None:
    old = tmp_path / "old.avbk"
    manifest = {"format": "anyvirt-backup/1", "vm": {"name": "old", "cpus": 1, "memory_mib": 64},
                "disks": []}
    data = json.dumps(manifest).encode()
    with tarfile.open(old, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    repo = BackupRepository(tmp_path / "repo")
    with pytest.raises(InvalidSpec, match="format 1"):
        repo.import_archive(old)
    assert repo.points() == []


def test_export_refuses_an_existing_file_and_a_bad_point_id(source: anyvirt.VM, tmp_path: Path) -> None:
    repo = BackupRepository(tmp_path / "repo")
    point = repo.backup(source)
    taken = tmp_path / "taken.avbk"
    taken.write_bytes(b"precious")
    with pytest.raises(AlreadyExists):
        repo.export_archive(point, taken)
    assert taken.read_bytes() == b"precious"
    with pytest.raises(InvalidSpec, match="not a restore point id"):
        repo.export_archive("../../etc/passwd", tmp_path / "x.avbk")
    # a backup exported is the same VM an archive of it would be
    out = repo.export_archive(point, tmp_path / "point.avbk")
    assert memory_disk(memory_host("t").restore(out)) == memory_disk(source)
    assert points.is_id(point.id)
