"""A served qcow2 layer is data, never a reason to open a file here: a header that names an
external data file is refused before qemu-storage-daemon (or qemu-img) opens the layer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from anyvirt.errors import InvalidSpec
from anyvirt.kit import nbd_server, qemu_img, raw_view
from anyvirt.kit.served_views import ServedDisk, served_views

MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(not raw_view.available(),
                                reason="raw views need qemu-storage-daemon and /dev/fuse")


def served(image: bytes) -> dict[str, nbd_server.Export]:
    return {"top": nbd_server.Export(size=len(image),
                                     read_at=lambda offset, n: image[offset:offset + n])}


def test_a_layer_naming_a_data_file_is_refused_and_the_file_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={secret},data_file_raw=on", str(top), str(MIB)], check=True)
    secret.write_bytes(b"not yours " * (MIB // 10) + bytes(MIB % 10))
    header = top.read_bytes()
    assert qemu_img.qcow2_data_file_named(header[:qemu_img.QCOW2_HEADER])
    with pytest.raises(InvalidSpec, match="external data file"), \
            served_views(served(header), [ServedDisk("disk0", [("top", "qcow2")], MIB)]) as out:
        pytest.fail(f"served a view that shows {Path(out[0].path).read_bytes()[:10]!r}")


def test_a_plain_qcow2_layer_is_served(tmp_path: Path) -> None:
    top = tmp_path / "plain.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(top), str(MIB)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 4096", str(top)],
                   check=True, capture_output=True)
    image = top.read_bytes()
    assert not qemu_img.qcow2_data_file_named(image[:qemu_img.QCOW2_HEADER])
    with served_views(served(image), [ServedDisk("disk0", [("top", "qcow2")], MIB)]) as out:
        assert Path(out[0].path).read_bytes()[:4096] == b"\x5a" * 4096


@pytest.mark.parametrize("header", [b"", b"QFI\xfb", b"QFI\xfb\x00\x00\x00\x02" + bytes(200),
                                    b"raw data" * 20])
def test_headers_that_name_no_data_file(header: bytes) -> None:
    assert not qemu_img.qcow2_data_file_named(header)
