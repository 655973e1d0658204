"""Disk images in and out of a datastore through the HTTPS /folder interface, streamed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest
from anyvirt_vsphere.datastore_files import download, upload
from anyvirt_vsphere.driver import VSphereDriver
from anyvirt_vsphere.testbed.vcsim import Vcsim

from anyvirt.errors import ConnectionFailed, InvalidSpec, NotFound
from anyvirt.host import Host
from anyvirt.model import DiskSpec, VMSpec
from anyvirt.tasks import Job

SIZE = 3 * 1024 * 1024 + 17  # not a multiple of the chunk size


def _datastore(host: Host) -> str:
    return host.info().storage[0].name


def test_upload_then_download_is_byte_identical(vsphere_host: Host, tmp_path: Path) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(SIZE))
    ds = _datastore(vsphere_host)
    assert upload(vsphere_host, ds, "anyvirt-test/disk one%.img", source) == SIZE
    back = tmp_path / "back.img"
    assert download(vsphere_host, ds, "anyvirt-test/disk one%.img", back) == SIZE
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()


def test_upload_from_a_pipe_streams(vsphere_host: Host, tmp_path: Path) -> None:
    """A pipe cannot be read whole in advance: the bytes must flow as they come."""
    data = os.urandom(SIZE)
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as out:
            for start in range(0, SIZE, 65536):
                out.write(data[start : start + 65536])

    feeder = threading.Thread(target=feed)
    feeder.start()
    with os.fdopen(read_end, "rb") as stream:
        upload(vsphere_host, _datastore(vsphere_host), "anyvirt-test/piped.img", stream, size=SIZE)
    feeder.join()
    back = tmp_path / "piped.img"
    download(vsphere_host, _datastore(vsphere_host), "anyvirt-test/piped.img", back)
    assert back.read_bytes() == data


def test_missing_files_and_bad_paths(vsphere_host: Host, tmp_path: Path) -> None:
    ds = _datastore(vsphere_host)
    target = tmp_path / "never.img"
    with pytest.raises(NotFound):
        download(vsphere_host, ds, "anyvirt-test/no-such-file.img", target)
    assert not target.exists(), "no partial file is left"
    for bad in ("", "../etc/passwd", "a/../../b"):
        with pytest.raises(InvalidSpec):
            upload(vsphere_host, ds, bad, tmp_path / "x", size=0)


def test_an_uploaded_vmdk_becomes_a_vm_disk(vsphere_host: Host, tmp_path: Path) -> None:
    """The cross-platform import path: upload a monolithicFlat pair, attach it, read it back."""
    ds = _datastore(vsphere_host)
    sectors = 2048
    extent = os.urandom(sectors * 512)
    descriptor = (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n'
        f'RW {sectors} FLAT "imported-flat.vmdk" 0\n\n'
        'ddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "13"\n'
    ).encode()
    (tmp_path / "flat").write_bytes(extent)
    (tmp_path / "desc").write_bytes(descriptor)
    upload(vsphere_host, ds, "imported/imported-flat.vmdk", tmp_path / "flat")
    upload(vsphere_host, ds, "imported/imported.vmdk", tmp_path / "desc")
    image = f"[{ds}] imported/imported.vmdk"
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    made = vsphere_host.vms.create(VMSpec(name="imported", disks=[DiskSpec(image=image)], node=node))
    try:
        assert [d.path for d in made.info().disks] == [image]
        back = tmp_path / "back"
        download(vsphere_host, ds, "imported/imported-flat.vmdk", back)
        assert back.read_bytes() == extent
    finally:
        vsphere_host.vms.get(made.id).delete(disks=False)


def test_a_qcow2_image_becomes_a_disk_and_exports_byte_identical(vsphere_host: Host, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    raw = tmp_path / "src.raw"
    raw.write_bytes(data)
    qcow2 = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    vm = vsphere_host.vms.create(
        VMSpec(name="from-qcow2", node=node, disks=[DiskSpec(image=str(qcow2), size_gib=0.00390625)])
    )
    try:
        disk = vm.info().disks[0]
        assert disk.size_bytes == 4 * 1024 * 1024  # grown to size_gib
        assert disk.path == "[LocalDS_0] from-qcow2/from-qcow2.vmdk"  # imported by lease, in its folder
        driver = vsphere_host.driver
        assert isinstance(driver, VSphereDriver)
        out = tmp_path / "out"
        out.mkdir()
        exported = driver.export_disks(vm.id, out, Job("export", 60))
        assert [(e.format, e.size_bytes) for e in exported] == [("raw", 4 * 1024 * 1024)]
        content = Path(exported[0].path).read_bytes()
        assert content[: len(data)] == data and content[len(data) :] == bytes(len(content) - len(data))
    finally:
        vm.delete(disks=True)


def test_disks_export_after_snapshots_were_deleted(vsphere_host: Host, tmp_path: Path) -> None:
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    vm = vsphere_host.vms.create(
        VMSpec(name="snapped-then-exported", node=node, memory_mib=64, disks=[DiskSpec(size_gib=0.001)])
    )
    try:
        first = vm.snapshots.create("first")
        second = vm.snapshots.create("second")
        vm.snapshots.create("third")
        second.delete(children=True)
        first.delete()
        driver = vsphere_host.driver
        assert isinstance(driver, VSphereDriver)
        exported = driver.export_disks(vm.id, tmp_path, Job("export", 60))
        assert [e.size_bytes for e in exported] == [vm.info().disks[0].size_bytes]
    finally:
        vm.delete(disks=True)


def test_a_stream_shorter_or_longer_than_declared_is_refused(vsphere_host: Host, tmp_path: Path) -> None:
    import io

    from anyvirt.errors import TaskFailed

    ds = _datastore(vsphere_host)
    with pytest.raises(TaskFailed, match="ended after 100 of the declared 200"):
        upload(vsphere_host, ds, "anyvirt-test/short.img", io.BytesIO(b"x" * 100), size=200)
    with pytest.raises(TaskFailed, match="longer than the declared 100"):
        upload(vsphere_host, ds, "anyvirt-test/long.img", io.BytesIO(b"x" * 101), size=100)
    for name in ("short", "long"):  # neither stays on the datastore as if it were complete
        with pytest.raises(NotFound):
            download(vsphere_host, ds, f"anyvirt-test/{name}.img", tmp_path / name)


def test_transfers_report_progress_to_the_job(vsphere_host: Host, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from anyvirt.kit import streams

    monkeypatch.setattr(streams, "PROGRESS_EVERY", 0.0)
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(SIZE))
    ds = _datastore(vsphere_host)
    seen: list[tuple[float | None, str]] = []
    job = Job("transfer", 60, lambda pct, msg: seen.append((pct, msg)))
    upload(vsphere_host, ds, "anyvirt-test/progress.img", source, job=job, span=(0, 50))
    assert download(vsphere_host, ds, "anyvirt-test/progress.img", tmp_path / "back", job=job,
                    span=(50, 100)) == SIZE
    percents = [p for p, _ in seen if p is not None]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert 50.0 in percents
    assert seen[-1][1].startswith("downloading") and "3.0 MiB of 3.0 MiB" in seen[-1][1]


def test_an_image_that_points_at_other_files_is_refused_before_anything(
        vsphere_host: Host, tmp_path: Path) -> None:
    from anyvirt.kit import qemu_img

    base = tmp_path / "base.raw"
    qemu_img.create(base, "raw", 1024 * 1024)
    top = tmp_path / "top.qcow2"
    qemu_img.create(top, "qcow2", backing=base, backing_format="raw")
    before = {vm.name for vm in vsphere_host.vms.list()}
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    with pytest.raises(InvalidSpec, match="backing file"):
        vsphere_host.vms.create(VMSpec(name="from-backing", node=node, disks=[DiskSpec(image=str(top))]))
    assert {vm.name for vm in vsphere_host.vms.list()} == before


def test_another_host_is_trusted_by_the_thumbprint_vsphere_gave_for_it(
        vsphere_host: Host, vcsim: Vcsim) -> None:
    """An import lease may send the disk to an ESXi host other than the one connected to,
    naming its certificate's thumbprint: the connection is pinned to it (checked before a
    byte is sent), and a certificate that does not match is refused."""
    import ssl

    from anyvirt_vsphere.datastore_files import connection

    assert vcsim.ca_file is not None
    der = ssl.PEM_cert_to_DER_cert(vcsim.ca_file.read_text())
    for algorithm in ("sha1", "sha256"):
        digest = hashlib.new(algorithm, der).hexdigest().upper()
        thumbprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
        # "localhost" is not the host the session speaks to (127.0.0.1), nor in the certificate
        with connection(vsphere_host.driver, "localhost", vcsim.port, thumbprint=thumbprint) as conn:
            conn.request("GET", "/about")
            assert conn.getresponse().status < 500
    with pytest.raises(ConnectionFailed, match="does not match"), \
            connection(vsphere_host.driver, "localhost", vcsim.port, thumbprint="AB" * 20) as conn:
        conn.request("GET", "/about")
