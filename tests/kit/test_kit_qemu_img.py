"""The qemu-img runner against the real qemu-img, on small images in a temporary directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from anyvirt.errors import Cancelled, InvalidSpec, TaskFailed, Timeout
from anyvirt.kit import qemu_img
from anyvirt.tasks import Job

MIB = 1024 * 1024


def raw_qemu_img(*args: str) -> None:
    """qemu-img called directly, to build hostile images the runner would refuse to make."""
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.qcow2"
    qemu_img.create(path, "qcow2", 4 * MIB)
    return path


def test_create_and_info(base: Path) -> None:
    facts = qemu_img.info(base, format="qcow2")
    assert (facts.format, facts.virtual_size, facts.backing_file) == ("qcow2", 4 * MIB, None)
    assert facts.path == str(base)
    assert facts.actual_size and facts.actual_size > 0


def test_linked_clone_records_backing_and_chain(tmp_path: Path, base: Path) -> None:
    top = tmp_path / "top.qcow2"
    qemu_img.create(top, "qcow2", backing=base, backing_format="qcow2")
    facts = qemu_img.info(top, format="qcow2", backing_chain=True)
    assert facts.backing_file == str(base)
    assert facts.backing_format == "qcow2"
    assert [b.path for b in facts.backing_chain] == [str(base)]
    assert facts.virtual_size == 4 * MIB


def test_backing_without_format_is_refused(tmp_path: Path, base: Path) -> None:
    with pytest.raises(InvalidSpec, match="format"):
        qemu_img.create(tmp_path / "top.qcow2", "qcow2", backing=base)


@pytest.mark.parametrize("name", ["--help", "-f", "-x.qcow2", "nbd:127.0.0.1:1"])
def test_file_names_that_look_like_options_or_protocols(tmp_path: Path, name: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    qemu_img.create(name, "qcow2", MIB)
    assert (tmp_path / name).is_file()
    facts = qemu_img.inspect_untrusted(name)
    assert (facts.format, facts.virtual_size) == ("qcow2", MIB)
    qemu_img.convert(name, name + ".raw", source_format="qcow2", format="raw")
    assert (tmp_path / (name + ".raw")).stat().st_size == MIB


def test_formats_outside_the_allow_list(tmp_path: Path, base: Path) -> None:
    with pytest.raises(InvalidSpec, match="not one of"):
        qemu_img.create(tmp_path / "x.img", "vvfat", MIB)
    with pytest.raises(InvalidSpec, match="not one of"):
        qemu_img.info(base, format="nbd")
    with pytest.raises(InvalidSpec, match="is qcow2; expected raw"):
        qemu_img.inspect_untrusted(base, ["raw"])


@pytest.mark.parametrize(("fmt", "options"), [
    ("raw", {}), ("qcow2", {}), ("vmdk", {}), ("vmdk", {"subformat": "streamOptimized"}),
    ("vdi", {}), ("vpc", {}), ("vpc", {"subformat": "fixed"}), ("vhdx", {}),
])
def test_single_file_images_of_every_format_pass(tmp_path: Path, fmt: str,
                                                 options: dict[str, str]) -> None:
    path = tmp_path / f"disk.{fmt}"
    qemu_img.create(path, fmt, 2 * MIB, options=options)
    assert qemu_img.probe_format(path) == fmt
    facts = qemu_img.inspect_untrusted(path)
    assert facts.format == fmt
    assert facts.virtual_size >= 2 * MIB


def test_backing_file_refused_unless_trusted(tmp_path: Path, base: Path) -> None:
    top = tmp_path / "top.qcow2"
    qemu_img.create(top, "qcow2", backing=base, backing_format="qcow2")
    with pytest.raises(InvalidSpec, match="backing file"):
        qemu_img.inspect_untrusted(top)
    other = tmp_path / "other.qcow2"
    qemu_img.create(other, "qcow2", MIB)
    with pytest.raises(InvalidSpec, match="backing file"):
        qemu_img.inspect_untrusted(top, trusted_backing=other)
    facts = qemu_img.inspect_untrusted(top, trusted_backing=base)
    assert facts.backing_file == str(base)


def test_trusted_backing_needs_its_format_recorded(tmp_path: Path, base: Path) -> None:
    top = tmp_path / "top.qcow2"
    qemu_img.create(top, "qcow2", backing=base, backing_format="qcow2")
    forget_backing_format(top)
    assert qemu_img.info(top, format="qcow2").backing_format is None
    with pytest.raises(InvalidSpec, match="format of its backing file"):
        qemu_img.inspect_untrusted(top, trusted_backing=base)


def forget_backing_format(image: Path) -> None:
    """Turn the qcow2 header extension naming the backing format into an unknown one (ignored),
    as in images written before qemu insisted on -F."""
    data = bytearray(image.read_bytes())
    offset = int.from_bytes(data[100:104], "big")  # header_length (v3)
    while True:
        kind = int.from_bytes(data[offset:offset + 4], "big")
        size = int.from_bytes(data[offset + 4:offset + 8], "big")
        if kind == 0:
            raise AssertionError("no backing format extension")
        if kind == 0xE2792ACA:
            data[offset:offset + 4] = (0x0BADF00D).to_bytes(4, "big")
            image.write_bytes(data)
            return
        offset += 8 + (size + 7) // 8 * 8


@pytest.fixture
def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.setblocking(False)
    return sock


def nobody_connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def test_json_backing_opens_no_connection(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    spec = "json:" + json.dumps({"driver": "nbd", "server": {"type": "inet", "host": "127.0.0.1",
                                                              "port": str(port)}})
    top = tmp_path / "evil.qcow2"
    raw_qemu_img("create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", spec, str(top), str(MIB))
    with pytest.raises(InvalidSpec, match="backing file"):
        qemu_img.inspect_untrusted(top)
    with pytest.raises(InvalidSpec, match="backing file"):
        qemu_img.inspect_untrusted(top, trusted_backing=tmp_path / "anything")
    assert nobody_connected(listener)
    listener.close()


def test_json_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="json:"):
        qemu_img.inspect_untrusted('json:{"driver": "file", "filename": "/etc/passwd"}')


def test_vmdk_with_external_extent_is_refused_before_qemu_img_opens_it(tmp_path: Path) -> None:
    # the extent is a FIFO: had qemu-img opened it, the call would hang until its timeout
    os.mkfifo(tmp_path / "secret")
    descriptor = tmp_path / "evil.vmdk"
    descriptor.write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
        'createType="monolithicFlat"\n\nRW 2048 FLAT "secret" 0\n'
    )
    assert qemu_img.probe_format(descriptor) == "vmdk"
    with pytest.raises(InvalidSpec, match="extent"):
        qemu_img.inspect_untrusted(descriptor, timeout=5)


def test_qemu_made_flat_vmdk_is_refused(tmp_path: Path) -> None:
    flat = tmp_path / "flat.vmdk"
    qemu_img.create(flat, "vmdk", MIB, options={"subformat": "monolithicFlat"})
    with pytest.raises(InvalidSpec, match="extent"):
        qemu_img.inspect_untrusted(flat)


def test_qcow2_with_external_data_file_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "df.qcow2"
    qemu_img.create(image, "qcow2", MIB, options={"data_file": str(tmp_path / "data.bin")})
    with pytest.raises(InvalidSpec, match="data file"):
        qemu_img.inspect_untrusted(image)


def test_a_raw_disk_that_starts_like_qcow2_stays_raw(tmp_path: Path, base: Path) -> None:
    # a guest can write a qcow2 header (with a backing file) into its own raw disk
    top = tmp_path / "top.qcow2"
    qemu_img.create(top, "qcow2", backing=base, backing_format="qcow2")
    disk = tmp_path / "guest.raw"
    disk.write_bytes(top.read_bytes())
    with pytest.raises(InvalidSpec, match="backing file"):
        qemu_img.inspect_untrusted(disk)  # probed: our probe says qcow2, refused
    facts = qemu_img.inspect_untrusted(disk, format="raw")  # declared raw: read as raw
    assert (facts.format, facts.backing_file) == ("raw", None)
    assert 0 <= facts.virtual_size - disk.stat().st_size < 512  # qemu rounds up to a sector


def test_missing_and_unreadable_images(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="not a file"):
        qemu_img.inspect_untrusted(tmp_path / "nope.qcow2")
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"QFI\xfb\x00\x00\x00\x03" + b"\xff" * 200)
    with pytest.raises(InvalidSpec):
        qemu_img.inspect_untrusted(junk)


def test_convert_reports_progress_and_compare(tmp_path: Path) -> None:
    source = tmp_path / "src.raw"
    with source.open("wb") as handle:
        handle.truncate(64 * MIB)
        handle.seek(10 * MIB)
        handle.write(os.urandom(MIB))
    seen: list[float] = []
    job = Job("convert", 60, lambda pct, _msg: seen.append(pct or 0.0))
    out = tmp_path / "out.qcow2"
    qemu_img.convert(source, out, source_format="raw", format="qcow2", job=job)
    assert seen and max(seen) == 100.0
    assert qemu_img.compare(source, out, first_format="raw", second_format="qcow2")
    with source.open("r+b") as handle:
        handle.seek(20 * MIB)
        handle.write(b"changed")
    assert not qemu_img.compare(source, out, first_format="raw", second_format="qcow2")
    need = qemu_img.measure(source, source_format="raw", format="qcow2")
    assert MIB < need.required < need.fully_allocated


def test_failed_convert_leaves_no_partial_output(tmp_path: Path) -> None:
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "out.raw"
    with pytest.raises(TaskFailed, match=r"converting bad\.qcow2 to raw: "):
        qemu_img.convert(bad, out, source_format="qcow2", format="raw")
    assert not out.exists()


def test_timeout_kills_qemu_img(tmp_path: Path) -> None:
    fifo = tmp_path / "stuck.raw"
    os.mkfifo(fifo)  # opening a FIFO with no writer blocks qemu-img
    with pytest.raises(Timeout):
        qemu_img.info(fifo, format="raw", timeout=0.5)


def test_cancelled_job_stops_qemu_img(tmp_path: Path) -> None:
    job = Job("info", 60)
    job.request_cancel()
    with pytest.raises(Cancelled):
        qemu_img.info(tmp_path / "whatever.raw", format="raw", job=job)


def test_options_escape_commas_and_refuse_bad_names() -> None:
    assert qemu_img.options_arg({"data_file": "a,b", "lazy_refcounts": True}) == [
        "-o", "data_file=a,,b,lazy_refcounts=on"]
    with pytest.raises(InvalidSpec):
        qemu_img.options_arg({"x,backing_file": "y"})
