"""The raw view: a qcow2's guest bytes as a file, through a real qemu-storage-daemon and
FUSE, without a copy; nothing (process, mount) is left after."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anyvirt.errors import NotSupported
from anyvirt.kit import qemu_img, raw_view


def _qcow2(tmp_path: Path) -> tuple[Path, bytes]:
    raw = tmp_path / "src.raw"
    data = os.urandom(1024 * 1024) + bytes(3 * 1024 * 1024)
    raw.write_bytes(data)
    image = tmp_path / "src.qcow2"
    qemu_img.convert(raw, image, source_format="raw", format="qcow2")
    return image, data


def test_a_qcow2_reads_as_its_raw_bytes_and_the_view_goes_away(tmp_path: Path) -> None:
    image, data = _qcow2(tmp_path)
    if not raw_view.available():  # a machine without FUSE says so, typed
        with pytest.raises(NotSupported), raw_view.raw_view(image, "qcow2", len(data)):
            pass
        return
    with raw_view.raw_view(image, "qcow2", len(data)) as view:
        assert view.stat().st_size == len(data)
        assert view.read_bytes() == data
        held = view
    assert not raw_view._mounted(held) and not held.exists()


def test_a_view_of_a_wrong_size_or_format_fails_and_cleans_up(tmp_path: Path) -> None:
    image, data = _qcow2(tmp_path)
    if not raw_view.available():
        with pytest.raises(NotSupported), raw_view.raw_view(image, "qcow2", len(data)):
            pass
        return
    with pytest.raises(Exception, match="raw view holds"), \
            raw_view.raw_view(image, "qcow2", len(data) + 512):
        pass
    with pytest.raises(Exception, match="could not open"), raw_view.raw_view(image, "vdi", 1):
        pass


def test_without_the_daemon_it_is_not_supported(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    image, data = _qcow2(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-storage-daemon on it
    with pytest.raises(NotSupported, match="qemu-storage-daemon"), \
            raw_view.raw_view(image, "qcow2", len(data)):
        pass
