"""Restore streams the chunks into the target's import: no staged copy of a disk, onto a
real libvirt (QEMU, ``qemu:///embed`` at the process's one root, tests/conftest.py: its
import converts straight into its images folder, so every temporary file seen here is the
restore's own)."""

from __future__ import annotations

import stat
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import MIB, image, memory_disk, memory_host, pattern

import anyvirt
from anyvirt import BackupRepository, DiskSpec, InvalidSpec, VMSpec
from anyvirt.kit import qemu_img, raw_view
from anyvirt.repository import chunk_images


@pytest.fixture
def small_tmp(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: too small for any disk restored here."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(small)],
                   check=True)
    try:
        yield small
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


class PeakWatcher:
    """The most bytes any regular file under ``root`` ever held (allocated), polled while
    the block runs; mount points (the raw views) are not files of the temp dir."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak = root, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeakWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        device = self.root.stat().st_dev
        while not self._stop.wait(0.005):
            for path in list(self.root.rglob("*")):
                try:
                    found = path.stat()  # one stat: a view may be mounted over it meanwhile
                except OSError:
                    continue  # gone meanwhile
                if stat.S_ISREG(found.st_mode) and found.st_dev == device:
                    self.peak = max(self.peak, found.st_blocks * 512)


def raw_bytes(vm: anyvirt.VM, tmp: Path) -> bytes:
    disk = vm.info().disks[0]
    assert disk.path is not None
    out = tmp / f"{uuid.uuid4().hex}.raw"
    qemu_img.convert(disk.path, out, source_format=disk.format or "qcow2", format="raw")
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def big_source(tmp_path: Path) -> anyvirt.VM:
    """64 MiB with 40 MiB of data: more than the small temp dir holds."""
    disk = image(tmp_path / "src.raw", 64 * MIB,
                 [(0, pattern(7, 24 * MIB)), (40 * MIB, pattern(8, 16 * MIB))])
    # no NIC: an embedded libvirt has no networks
    return memory_host().vms.create(VMSpec(name="big", cpus=1, memory_mib=64,
                                           disks=[DiskSpec(image=str(disk))]))


@pytest.mark.skipif(not raw_view.available(), reason="raw views need qemu-storage-daemon "
                    "and /dev/fuse; without them the restore stages temporary files")
def test_a_restore_onto_libvirt_stages_no_copy_of_the_disk(
        embed_uri: str, small_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = big_source(tmp_path)
    repo = BackupRepository(tmp_path / "repo")
    point = repo.backup(source)
    monkeypatch.setattr(tempfile, "tempdir", str(small_tmp))  # every temporary file there
    with anyvirt.connect(embed_uri) as host, PeakWatcher(small_tmp) as watched:
        copy = repo.restore(point, to=host, name=f"streamed-{uuid.uuid4().hex[:6]}")
        try:
            assert raw_bytes(copy, tmp_path) == memory_disk(source)
        finally:
            copy.delete(disks=True)
    # not a chunk's worth of the disk was ever written to a temporary file
    assert watched.peak < MIB
    assert not [p for p in small_tmp.rglob("*") if p.is_file()], "nothing left behind"


@pytest.mark.skipif(not raw_view.available(), reason="raw views need qemu-storage-daemon "
                    "and /dev/fuse; without them the restore stages temporary files")
def test_the_libvirt_import_converts_from_the_chunks_export_itself(
        embed_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The import's qemu-img reads the restore's NBD export directly (several requests in
    flight), not the raw view's FUSE file one request at a time; byte for byte."""
    source = big_source(tmp_path)
    repo = BackupRepository(tmp_path / "repo")
    point = repo.backup(source)
    runs: list[list[str]] = []
    real = qemu_img.run

    def recording(args: list[str], **kwargs: Any) -> tuple[int, str]:
        runs.append(list(args))
        return real(args, **kwargs)

    monkeypatch.setattr(qemu_img, "run", recording)
    with anyvirt.connect(embed_uri) as host:
        copy = repo.restore(point, to=host, name=f"direct-{uuid.uuid4().hex[:6]}")
        try:
            converts = [args for args in runs if args[0] == "convert"]
            source_arg = converts[0][converts[0].index("--") + 1]
            assert source_arg.startswith("json:") and '"driver": "nbd"' in source_arg
            assert raw_bytes(copy, tmp_path) == memory_disk(source)
        finally:
            copy.delete(disks=True)


def test_a_damaged_chunk_fails_a_streamed_restore_and_leaves_nothing_on_libvirt(
        embed_uri: str, tmp_path: Path) -> None:
    source = big_source(tmp_path)
    root = tmp_path / "repo"
    repo = BackupRepository(root)
    point = repo.backup(source)
    # a chunk well into the disk: the import has begun when it is read
    ids = [c for c in repo._index(point, 0).hex(" ", 32).split() if set(c) != {"0"}]
    damaged = root / "chunks" / ids[30][:2] / ids[30]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    with anyvirt.connect(embed_uri) as host:
        before = {vm.name for vm in host.vms.list()}
        images = Path(embed_uri.split("root=", 1)[1]) / "images"
        files = set(images.iterdir()) if images.exists() else set()
        with pytest.raises(InvalidSpec, match=ids[30]):
            repo.restore(point, to=host, name=f"damaged-{uuid.uuid4().hex[:6]}")
        assert {vm.name for vm in host.vms.list()} == before
        assert (set(images.iterdir()) if images.exists() else set()) == files


def test_without_raw_views_a_restore_writes_sparse_temporary_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with no qemu-storage-daemon or no FUSE: the disks are staged as before
    (holes never written), and a damaged chunk still fails the restore by name."""
    source = big_source(tmp_path)
    root = tmp_path / "repo"
    repo = BackupRepository(root)
    point = repo.backup(source)
    monkeypatch.setattr(raw_view, "available", lambda: False)  # what such a machine reports
    staged: list[int] = []
    write_disk = chunk_images.write_disk

    def watched(*args: Any) -> None:
        write_disk(*args)
        staged.append(Path(args[4]).stat().st_blocks * 512)

    monkeypatch.setattr(chunk_images, "write_disk", watched)
    copy = repo.restore(point, to=memory_host("t"), name="staged")
    assert memory_disk(copy) == memory_disk(source)
    assert staged == [40 * MIB]  # the data only: the zero chunks stayed holes
    damaged = next(p for p in (root / "chunks").rglob("*") if p.is_file())
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    with pytest.raises(InvalidSpec, match=damaged.name):
        repo.restore(point, to=memory_host("t"), name="damaged")
