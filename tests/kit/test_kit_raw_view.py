"""The raw view: a qcow2's guest bytes as a file, through a real qemu-storage-daemon and
FUSE, without a copy; nothing (process, mount) is left after. A view of an NBD export is
converted by the kit's qemu-img from the export itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from anyvirt.errors import NotSupported
from anyvirt.kit import nbd_server, qemu_img, raw_view


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


def _recorded_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every qemu-img argument list the kit runs (each run as it would be)."""
    runs: list[list[str]] = []
    real = qemu_img.run

    def recording(args: list[str], **kwargs: object) -> tuple[int, str]:
        runs.append(list(args))
        return real(args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(qemu_img, "run", recording)
    return runs


@pytest.mark.skipif(not raw_view.available(), reason="no qemu-storage-daemon or /dev/fuse")
def test_converting_a_view_of_an_export_reads_the_export_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-layer view read as raw is converted from its NBD export (the graph the kit
    recorded for the view: no FUSE hop); read as another format, or once the view is gone,
    the path is what qemu-img reads."""
    data = os.urandom(1024 * 1024) + bytes(1024 * 1024)
    export = nbd_server.Export(size=len(data), read_at=lambda o, n: data[o:o + n])
    runs = _recorded_runs(monkeypatch)
    with nbd_server.NbdServer({"disk": export}) as server, \
            raw_view.raw_view_of_nbd_chain(server.socket_path, [("disk", "raw")],
                                           len(data)) as view:
        qemu_img.convert(view, tmp_path / "out.qcow2", source_format="raw", format="qcow2")
        source = runs[-1][runs[-1].index("--") + 1]
        assert source.startswith("json:")
        assert json.loads(source.removeprefix("json:")) == {
            "driver": "raw", "read-only": True,
            "file": {"driver": "nbd", "export": "disk", "read-only": True,
                     "server": {"type": "unix", "path": str(server.socket_path)}}}
        assert server.bytes_served >= len(data) // 2
    qemu_img.convert(tmp_path / "out.qcow2", tmp_path / "out.raw", source_format="qcow2",
                     format="raw")
    assert (tmp_path / "out.raw").read_bytes() == data
    with pytest.raises(Exception, match="converting"):  # the view is gone: its path is read
        qemu_img.convert(view, tmp_path / "again.qcow2", source_format="raw", format="qcow2")
    assert runs[-1][runs[-1].index("--") + 1] == str(view)


@pytest.mark.skipif(not raw_view.available(), reason="no qemu-storage-daemon or /dev/fuse")
def test_a_chain_view_is_converted_through_the_view(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu opens an inline backing together with the name the top layer's header gives:
    a chain is read through its view, flattened there."""
    image, data = _qcow2(tmp_path)
    overlay = tmp_path / "top.qcow2"
    qemu_img.create(overlay, "qcow2", backing=image, backing_format="qcow2")
    exports = {name: nbd_server.Export(size=path.stat().st_size,
                                       read_at=lambda o, n, p=path: _pread(p, o, n))
               for name, path in (("top", overlay), ("base", image))}
    runs = _recorded_runs(monkeypatch)
    with nbd_server.NbdServer(exports) as server, raw_view.raw_view_of_nbd_chain(
            server.socket_path, [("top", "qcow2"), ("base", "qcow2")], len(data)) as view:
        qemu_img.convert(view, tmp_path / "flat.raw", source_format="raw", format="raw")
        assert runs[-1][runs[-1].index("--") + 1] == str(view)
    assert (tmp_path / "flat.raw").read_bytes() == data


def _pread(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        return os.pread(handle.fileno(), length, offset)


@pytest.mark.skipif(not raw_view.available(), reason="no qemu-storage-daemon or /dev/fuse")
def test_a_one_layer_qcow2_view_is_converted_from_its_export(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A qcow2 export is decoded by qemu-img itself, its backing cut as in the view (the
    header is never followed), and the result is the view's bytes."""
    image, data = _qcow2(tmp_path)
    export = nbd_server.Export(size=image.stat().st_size,
                               read_at=lambda o, n: _pread(image, o, n))
    runs = _recorded_runs(monkeypatch)
    with nbd_server.NbdServer({"disk": export}) as server, raw_view.raw_view_of_nbd_chain(
            server.socket_path, [("disk", "qcow2")], len(data)) as view:
        qemu_img.convert(view, tmp_path / "flat.raw", source_format="raw", format="raw")
        source = json.loads(runs[-1][runs[-1].index("--") + 1].removeprefix("json:"))
        assert source["driver"] == "qcow2" and source["backing"] is None
    assert (tmp_path / "flat.raw").read_bytes() == data
