"""``anyvirt vm create --image PATH --image-format FORMAT``: the user says what an image is,
and the import takes it as that, never probing it. A raw disk whose guest wrote a qcow2
image at its start is imported raw, byte for byte, when ``--image-format raw`` says so
(probed, it would become that inner qcow2's contents). Bad formats and counts that pair
no image with a format are usage errors (exit 2) before anything is sent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import run

import anyvirt
from anyvirt import memory
from anyvirt.kit import qemu_img
from anyvirt.testing.disk_bytes import raw_disk_that_looks_like_qcow2


@pytest.fixture
def uri() -> Iterator[str]:
    name = f"imgfmt-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    memory.reset(name)


@pytest.fixture
def guest_disk(tmp_path: Path) -> Path:
    path = tmp_path / "guest.img"
    path.write_bytes(raw_disk_that_looks_like_qcow2(tmp_path))
    return path


def stored(uri: str, name: str) -> list[tuple[str, bytes]]:
    """Each disk of VM ``name`` as the memory host stored it: (format, bytes)."""
    with anyvirt.connect(uri) as host:
        contents = host.vms.get(name).native.contents
        return [contents[disk] for disk in sorted(contents)]


def same_disk(got: bytes, want: bytes) -> bool:
    """Byte for byte, where a stored copy may leave off the image's trailing zeros."""
    return len(got) <= len(want) and got.ljust(len(want), b"\0") == want


def test_a_raw_image_that_looks_like_qcow2_is_imported_raw_when_its_format_is_given(
        uri: str, guest_disk: Path, tmp_path: Path) -> None:
    done = run("vm", "create", uri, "given", "--image", str(guest_disk), "--image-format", "raw")
    assert done.exit_code == 0, done.output
    [(fmt, data)] = stored(uri, "given")
    assert fmt == "raw" and same_disk(data, guest_disk.read_bytes())
    # what the format spares: probed, the same file is taken for the qcow2 its guest wrote
    assert run("vm", "create", uri, "probed", "--image", str(guest_disk)).exit_code == 0
    [(_fmt, probed)] = stored(uri, "probed")
    assert not same_disk(probed, guest_disk.read_bytes())


def test_each_image_takes_its_own_format_in_order(uri: str, guest_disk: Path, tmp_path: Path) -> None:
    qcow2 = tmp_path / "other.qcow2"
    qemu_img.convert(guest_disk, qcow2, source_format="raw", format="qcow2")
    done = run("vm", "create", uri, "two", "--image", str(guest_disk), "--image-format", "raw",
               "--image", str(qcow2), "--image-format", "qcow2")
    assert done.exit_code == 0, done.output
    disks = stored(uri, "two")
    assert [fmt for fmt, _ in disks] == ["raw", "raw"]  # the qcow2 converted into storage
    assert all(same_disk(data, guest_disk.read_bytes()) for _, data in disks)


def test_one_format_is_every_images(uri: str, guest_disk: Path) -> None:
    done = run("vm", "create", uri, "both", "--image", str(guest_disk), "--image", str(guest_disk),
               "--image-format", "raw")
    assert done.exit_code == 0, done.output
    assert all(fmt == "raw" and same_disk(data, guest_disk.read_bytes())
               for fmt, data in stored(uri, "both"))


@pytest.mark.parametrize(("extra", "says"), [
    (["--image-format", "qcow"], "'qcow' is not one of"),
    (["--image-format", "raw", "--image-format", "raw", "--image-format", "raw"],
     "2 --image and 3 --image-format"),
])
def test_bad_formats_are_usage_errors_before_anything_is_sent(
        uri: str, guest_disk: Path, extra: list[str], says: str) -> None:
    done = run("vm", "create", uri, "bad", "--image", str(guest_disk), "--image", str(guest_disk), *extra)
    assert done.exit_code == 2 and says in done.output, done.output
    with anyvirt.connect(uri) as host:
        assert host.vms.list() == []


def test_a_format_without_an_image_is_a_usage_error(uri: str) -> None:
    done = run("vm", "create", uri, "blank", "--disk-gib", "1", "--image-format", "raw")
    assert done.exit_code == 2 and "give the image too" in done.output, done.output
