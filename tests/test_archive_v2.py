"""Archive format 2: what a backup holds, and every way a crafted archive is refused
before the restoring host sees anything (memory:// hosts, real qemu-img, real tmpfs)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import move_faults_support
import pytest
from move_faults_support import small_tmpfs

import anyvirt
from anyvirt import DiskSpec, InvalidSpec, NicSpec, StorageFull, VMSpec
from anyvirt.memory import reset
from anyvirt.migration import UnverifiedArchiveWarning, describe, verify
from anyvirt.testing.plugin import unique_name

temp_dir = move_faults_support.temp_dir  # the fixture, shared

DATA = os.urandom(300 * 1024) + bytes(3 * 1024 * 1024) + b"tail" * 1024


@pytest.fixture
def host() -> Iterator[anyvirt.Host]:
    name = unique_name("av2")
    with anyvirt.connect(f"memory://{name}") as h:
        yield h
    reset(name)


@pytest.fixture
def archive(host: anyvirt.Host, tmp_path: Path) -> Path:
    image = tmp_path / "src.raw"
    image.write_bytes(DATA)
    vm = host.vms.create(VMSpec(name="web1", cpus=2, memory_mib=512,
                                disks=[DiskSpec(image=str(image))],
                                nics=[NicSpec(network="default")]))
    return vm.backup(tmp_path / "web1.avbk")


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        out = []
        for m in tar.getmembers():
            handle = tar.extractfile(m)
            out.append((m, handle.read() if handle else b""))
        return out


def rewrite(src: Path, dest: Path, *, manifest: Callable[[dict[str, Any]], None] | None = None,
            disk: bytes | None = None, extra: list[tuple[tarfile.TarInfo, bytes]] = (),  # type: ignore[assignment]
            fix_sums: bool = True) -> Path:
    """A copy of ``src`` with its manifest edited / disk replaced, checksums made to match
    (so the check under test is the one that fires, not the checksum)."""
    members = _members(src)
    doc = json.loads(members[0][1])
    if disk is not None:
        doc["disks"][0]["file_bytes"] = len(disk)
        doc["disks"][0]["sha256"] = hashlib.sha256(disk).hexdigest()
    if manifest is not None:
        manifest(doc)
    data = json.dumps(doc).encode() if (manifest or disk is not None) else members[0][1]
    with tarfile.open(dest, "w") as tar:
        for member, content in members:
            if member.name == "manifest.json":
                content = data
            elif member.name == "manifest.sha256" and fix_sums:
                content = f"{hashlib.sha256(data).hexdigest()}  {len(data)}\n".encode()
            elif member.name.startswith("disks/") and disk is not None:
                content = disk
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
        for member, content in extra:
            tar.addfile(member, io.BytesIO(content) if member.isreg() else None)
    return dest


def refused(host: anyvirt.Host, archive: Path, match: str, temp_dir: Path,
            error: type[Exception] = InvalidSpec) -> None:
    with pytest.raises(error, match=match):
        host.restore(archive, name="copy")
    assert not host.vms.exists("copy"), "nothing is created"
    assert list(temp_dir.iterdir()) == [], "nothing is left in the temp dir"


def test_a_v2_archive_holds_checksums_version_and_raw_facts(host: anyvirt.Host, archive: Path,
                                                             temp_dir: Path) -> None:
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        disk = tar.extractfile(names[2]).read()  # type: ignore[union-attr]
    assert names[:2] == ["manifest.json", "manifest.sha256"]
    doc = anyvirt.migration.read_manifest(archive)
    entry = doc["disks"][0]
    assert doc["format"] == "anyvirt-backup/2" and doc["anyvirt_version"] == anyvirt.__version__
    assert doc["source"]["backend"] == "memory" and "raw" in doc["source"]
    assert doc["snapshots"]["mode"] == "flattened"
    assert entry["sha256"] == hashlib.sha256(disk).hexdigest()
    assert entry["file_bytes"] == len(disk) and entry["format"] == "qcow2" and entry["compressed"]
    assert len(disk) < len(DATA) // 3, "compressed: zeros are not stored"
    assert verify(archive).name == "web1"
    copy = host.restore(archive, name="copy")
    assert copy.native.contents["disk0"][1][: len(DATA)] == DATA
    assert list(temp_dir.iterdir()) == []


def test_one_flipped_byte_in_a_disk_is_refused(host: anyvirt.Host, archive: Path, tmp_path: Path,
                                               temp_dir: Path) -> None:
    raw = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        member = tar.getmember(tar.getnames()[2])
    raw[member.offset_data + member.size // 2] ^= 0x01
    bad = tmp_path / "flipped.avbk"
    bad.write_bytes(bytes(raw))
    with pytest.raises(InvalidSpec, match="sha256"):
        verify(bad)
    refused(host, bad, "sha256", temp_dir)


def test_an_edited_manifest_fails_its_own_checksum(host: anyvirt.Host, archive: Path,
                                                    tmp_path: Path, temp_dir: Path) -> None:
    bad = rewrite(archive, tmp_path / "bad.avbk", fix_sums=False,
                  manifest=lambda d: d["vm"].update(cpus=1))
    refused(host, bad, "does not match its checksum", temp_dir)


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["vm"].update(cpus="two"), "vm.cpus: expected an integer"),
    (lambda d: d["vm"].pop("memory_mib"), "vm.memory_mib is missing"),
    (lambda d: d["disks"][0].pop("size_bytes"), r"disks\[0\].size_bytes is missing"),
    (lambda d: d["disks"][0].update(size_bytes=4 * 1024**6), r"disks\[0\].size_bytes: .* outside"),
    (lambda d: d["disks"][0].update(format="vvfat"), r"disks\[0\].format"),
    (lambda d: d["disks"][0].update(file="../../etc/passwd"), r"disks\[0\].file"),
    (lambda d: d["disks"][0].update(file="/etc/passwd"), r"disks\[0\].file"),
    (lambda d: d["disks"][0].update(sha256="xyz"), r"disks\[0\].sha256"),
    (lambda d: d["vm"]["nics"][0].update(mac="52:54:00:zz"), r"vm.nics\[0\].mac"),
    (lambda d: d.update(vm=[]), "vm: expected an object"),
    (lambda d: d.update(format="anyvirt-backup/9"), "format"),
    (lambda d: d["snapshots"].update(mode="tree"), "snapshots.mode"),
], ids=["cpus-type", "memory-missing", "size-missing", "size-4EiB", "format", "dotdot", "absolute",
        "sha", "mac", "vm-type", "version", "snapshot-mode"])
def test_a_bad_manifest_field_is_named(host: anyvirt.Host, archive: Path, tmp_path: Path,
                                       temp_dir: Path, edit: Callable[[dict[str, Any]], None],
                                       field: str) -> None:
    bad = rewrite(archive, tmp_path / "bad.avbk", manifest=edit)
    with pytest.raises(InvalidSpec, match=field):
        describe(bad)
    refused(host, bad, field, temp_dir)


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0,
            link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = link
    return info, bytes(size)


@pytest.mark.parametrize(("extra", "why"), [
    (_member("../evil", size=4), "not a plain relative path"),
    (_member("/etc/evil", size=4), "not a plain relative path"),
    (_member("disks/link", tarfile.SYMTYPE, link="/etc/passwd"), "is a link"),
    (_member("disks/hard", tarfile.LNKTYPE, link="manifest.json"), "is a link"),
    (_member("disks/dev", tarfile.CHRTYPE), "is a device"),
    (_member("disks/more.qcow2", size=4), "does not name"),
], ids=["dotdot", "absolute", "symlink", "hardlink", "device", "unnamed"])
def test_members_outside_the_archive_or_not_files_are_refused(
        host: anyvirt.Host, archive: Path, tmp_path: Path, temp_dir: Path,
        extra: tuple[tarfile.TarInfo, bytes], why: str) -> None:
    bad = rewrite(archive, tmp_path / "bad.avbk", extra=[extra])
    refused(host, bad, why, temp_dir)


def test_a_small_archive_declaring_a_huge_member_is_refused(host: anyvirt.Host, archive: Path,
                                                             tmp_path: Path, temp_dir: Path) -> None:
    bad = rewrite(archive, tmp_path / "bad.avbk", disk=b"tiny")
    with tarfile.open(bad) as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    with open(bad, "r+b") as handle:  # a last member whose header says 1 TiB, with no bytes
        handle.seek(end)
        info = tarfile.TarInfo("disks/huge.raw")
        info.size = 1024**4
        handle.write(info.tobuf(tarfile.PAX_FORMAT) + bytes(1024))
    assert bad.stat().st_size < 64 * 1024
    refused(host, bad, "more than the archive holds", temp_dir)


def _image(tmp_path: Path, args: list[str]) -> bytes:
    out = tmp_path / "crafted.img"
    out.unlink(missing_ok=True)
    size = args.pop() if args[-1] == "1M" else None
    subprocess.run(["qemu-img", "create", "-q", *args, str(out), *([size] if size else [])],
                   check=True)
    return out.read_bytes()


@pytest.mark.parametrize(("make", "fmt", "why"), [
    (lambda p, secret: ["-f", "qcow2", "-F", "raw", "-b", str(secret)], "qcow2", "backing file"),
    (lambda p, secret: ["-f", "qcow2", "-u", "-F", "raw", "-b", "nbd://127.0.0.1:9", "1M"],
     "qcow2", "backing file"),
    (lambda p, secret: ["-f", "qcow2", "-u", "-F", "raw", "-b", "json:{}", "1M"], "qcow2",
     "backing file"),
], ids=["host-file", "nbd", "json"])
def test_images_pointing_outside_the_archive_are_refused(
        host: anyvirt.Host, archive: Path, tmp_path: Path, temp_dir: Path,
        make: Callable[[Path, Path], list[str]], fmt: str, why: str) -> None:
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"host secret" * 100)
    crafted = _image(tmp_path, make(tmp_path, secret))
    bad = rewrite(archive, tmp_path / "bad.avbk", disk=crafted,
                  manifest=lambda d: d["disks"][0].update(format=fmt))
    with pytest.raises(InvalidSpec, match=why):
        verify(bad)
    refused(host, bad, why, temp_dir)


def test_a_vmdk_descriptor_naming_a_host_file_is_refused(host: anyvirt.Host, archive: Path,
                                                        tmp_path: Path, temp_dir: Path) -> None:
    descriptor = (b'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                  b'createType="monolithicFlat"\nRW 2048 FLAT "/etc/passwd" 0\n')
    bad = rewrite(archive, tmp_path / "bad.avbk", disk=descriptor,
                  manifest=lambda d: d["disks"][0].update(format="vmdk", size_bytes=1024**2))
    refused(host, bad, "extent", temp_dir)


def test_disks_larger_than_the_free_storage_are_refused_first(archive: Path, tmp_path: Path,
                                                              temp_dir: Path) -> None:
    name = unique_name("av2-small")
    try:
        small = anyvirt.connect(f"memory://{name}?storage_gib=1")
        bad = rewrite(archive, tmp_path / "big.avbk",
                      manifest=lambda d: d["disks"][0].update(size_bytes=2 * 1024**3))
        refused(small, bad, "most free storage", temp_dir, StorageFull)
    finally:
        reset(name)


def test_a_v1_archive_restores_with_a_warning(host: anyvirt.Host, tmp_path: Path,
                                              temp_dir: Path) -> None:
    disk = b"v1 disk" + bytes(4096 - 7)
    manifest = {"format": "anyvirt-backup/1", "created": "2025-01-01T00:00:00Z",
                "source": {"backend": "memory", "uri": "memory://old"},
                "vm": {"name": "old", "cpus": 1, "memory_mib": 256, "firmware": "bios",
                       "guest_os": "linux", "description": "",
                       "nics": [{"id": "nic0", "network": "default", "model": None, "mac": None}]},
                "disks": [{"id": "disk0", "file": "disks/0-disk0.raw", "format": "raw",
                           "size_bytes": 4096, "bus": "virtio"}]}
    path = tmp_path / "old.avbk"
    with tarfile.open(path, "w") as tar:
        for name, content in (("manifest.json", json.dumps(manifest).encode()),
                              ("disks/0-disk0.raw", disk)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with pytest.warns(UnverifiedArchiveWarning, match="no checksums"):
        restored = host.restore(path)
    assert restored.native.contents["disk0"][1][:7] == b"v1 disk"
    assert list(temp_dir.iterdir()) == []


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs): writes past it fail with ENOSPC."""
    with small_tmpfs(tmp_path / "small", "2m") as mount:
        yield mount


def test_a_full_disk_during_backup_is_typed_and_leaves_nothing(host: anyvirt.Host, tmp_path: Path,
                                                                small_fs: Path) -> None:
    image = tmp_path / "big.raw"
    image.write_bytes(os.urandom(3 * 1024 * 1024))  # incompressible: 3 MiB cannot fit 2 MiB
    vm = host.vms.create(VMSpec(name="big", disks=[DiskSpec(image=str(image))]))
    with pytest.raises(StorageFull, match="no room"):
        vm.backup(small_fs / "big.avbk")
    assert list(small_fs.iterdir()) == []


def test_a_full_temp_dir_during_restore_is_typed_and_leaves_nothing(
        host: anyvirt.Host, tmp_path: Path, small_fs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "big.raw"
    image.write_bytes(os.urandom(3 * 1024 * 1024))
    archive = host.vms.create(VMSpec(name="big", disks=[DiskSpec(image=str(image))])).backup(
        tmp_path / "big.avbk")
    monkeypatch.setattr(tempfile, "tempdir", str(small_fs))
    with pytest.raises(StorageFull, match="free"):
        host.restore(archive, name="copy")
    assert not host.vms.exists("copy") and list(small_fs.iterdir()) == []


def test_a_qcow2_declared_raw_is_refused_by_verify_and_restore(
        host: anyvirt.Host, archive: Path, tmp_path: Path, temp_dir: Path) -> None:
    """Issue 17 #6: read as raw, a qcow2 with a backing file on a host file looks fine; its real
    format is what every later reader sees, so verify must say so (it said "ok")."""
    from click.testing import CliRunner

    from anyvirt.cli.main import cli

    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"host secret" * 100)
    crafted = _image(tmp_path, ["-f", "qcow2", "-F", "raw", "-b", str(secret)])
    bad = rewrite(archive, tmp_path / "bad.avbk", disk=crafted,
                  manifest=lambda d: d["disks"][0].update(format="raw", size_bytes=len(crafted)))
    with pytest.raises(InvalidSpec, match="declared raw but is really qcow2"):
        verify(bad)
    got = CliRunner().invoke(cli, ["--json", "verify", str(bad)])
    assert got.exit_code == 2, got.output
    assert "really qcow2" in got.output and '"ok": true' not in got.output
    refused(host, bad, "really qcow2", temp_dir)
