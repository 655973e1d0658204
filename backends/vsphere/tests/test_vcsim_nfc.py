# mypy: disable-error-code="no-untyped-call"
"""The testbed's vcsim keeps what an NFC import sends, the way an ESXi host does.

Stock vcsim discards every byte PUT to an import lease (our patch
``0003-nfc-upload-stores-disks.patch`` changes that). Spoken to here with
plain pyVmomi and HTTP, as any client of ``ImportVApp`` + ``HttpNfcLease``
would: a streamOptimized VMDK sent to the disk's device URL must come back
from the datastore as the VM's ``-flat.vmdk``, byte for byte, and a bad
stream must be refused without touching the disk already there.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
from anyvirt_vsphere.datastore_files import download
from anyvirt_vsphere.testbed.vcsim import Vcsim
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from anyvirt.host import Host
from anyvirt.kit.stream_vmdk import StreamOptimizedEncoder

PC = vmodl.query.PropertyCollector
MIB = 1024 * 1024
DISK_SIZE = 8 * MIB
SECTOR = 512


@pytest.fixture
def si(vcsim: Vcsim) -> Iterator[Any]:
    service = SmartConnect(host=vcsim.host, port=vcsim.port, user=vcsim.username,
                           pwd=vcsim.password, sslContext=vcsim.ssl_context(), connectionPoolTimeout=10)
    yield service
    Disconnect(service)


@pytest.fixture(scope="module")
def disk_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A raw disk, half random and half zeros, and two streamOptimized VMDKs of it.

    qemu-img's keeps its grain tables in the header and ends after the last
    grain; the kit's encoder writes them after the grains, with a footer and
    an end-of-stream marker, as VMware's tools do.
    """
    directory = tmp_path_factory.mktemp("nfc-images")
    raw, by_qemu, by_kit = (directory / name for name in ("disk.raw", "qemu.vmdk", "kit.vmdk"))
    with raw.open("wb") as out:
        out.write(os.urandom(DISK_SIZE // 2))
        out.truncate(DISK_SIZE)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(raw), str(by_qemu)], check=True, timeout=60)
    with StreamOptimizedEncoder(raw, DISK_SIZE, [(0, DISK_SIZE // 2)]) as encoder:
        by_kit.write_bytes(encoder.read())
    return raw, by_qemu, by_kit


def _properties(si: Any, obj: Any, *paths: str) -> dict[str, Any]:
    """Read properties through the PropertyCollector (vcsim 0.24.2 panics on unset ones read singly)."""
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=obj)],
                         propSet=[PC.PropertySpec(type=type(obj), pathSet=list(paths))])
    result = si.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    return {prop.name: prop.val for prop in result.objects[0].propSet}


@attrs.frozen
class Import:
    """One ImportVApp in progress: its lease, the new VM's disk and that disk's upload URL."""

    lease: Any
    datastore: str
    descriptor: str  # the VM's disk, relative to the datastore: "name/name.vmdk"
    url: str  # the disk's device URL, host filled in

    @property
    def flat(self) -> str:
        return self.descriptor.removesuffix(".vmdk") + "-flat.vmdk"


@pytest.fixture
def importing(si: Any, vcsim: Vcsim) -> Iterator[Import]:
    """An ImportVApp of a VM with one 8 MiB thin disk, its lease ready; the VM is destroyed after."""
    datacenter = si.content.rootFolder.childEntity[0]
    compute = datacenter.hostFolder.childEntity[0]
    pool = compute.resourcePool
    datastore = compute.host[0].datastore[0].name  # the ESX model's datacenter list is stale
    name = f"nfc-import-{uuid.uuid4().hex[:8]}"
    controller = vim.vm.device.VirtualDeviceSpec(
        operation="add", device=vim.vm.device.VirtualLsiLogicController(key=-100, busNumber=0,
                                                                        sharedBus="noSharing"))
    disk = vim.vm.device.VirtualDeviceSpec(
        operation="add", fileOperation="create",
        device=vim.vm.device.VirtualDisk(
            key=-101, controllerKey=-100, unitNumber=0, capacityInKB=DISK_SIZE // 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=f"[{datastore}]", diskMode="persistent", thinProvisioned=True)))
    config = vim.vm.ConfigSpec(name=name, memoryMB=64, numCPUs=1, guestId="otherGuest64",
                               files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"),
                               deviceChange=[controller, disk])
    lease = pool.ImportVApp(spec=vim.vm.VmImportSpec(configSpec=config), folder=datacenter.vmFolder)
    deadline = time.monotonic() + 10
    while (state := _properties(si, lease, "state")["state"]) != "ready":
        assert state == "initializing" and time.monotonic() < deadline, f"lease state {state}"
        time.sleep(0.05)
    info = _properties(si, lease, "info")["info"]
    vm = info.entity
    try:
        [device_url] = [url for url in info.deviceUrl if url.disk]
        [vm_disk] = [device for device in _properties(si, vm, "config.hardware.device")
                     ["config.hardware.device"] if isinstance(device, vim.vm.device.VirtualDisk)]
        prefix, disk_file = f"[{datastore}] ", str(getattr(vm_disk.backing, "fileName", ""))
        assert disk_file.startswith(prefix)
        descriptor = disk_file[len(prefix):]
        # the lease names the file it writes: the VM's disk descriptor
        assert device_url.targetId == descriptor.rsplit("/", 1)[-1]
        url = urlsplit(device_url.url)
        assert url.netloc == "*"  # "any host this lease came from"
        yield Import(lease, datastore, descriptor, url._replace(netloc=f"{vcsim.host}:{vcsim.port}").geturl())
    finally:
        with contextlib.suppress(vmodl.fault.ManagedObjectNotFound):  # completed: vcsim forgets it
            lease.HttpNfcLeaseAbort()
        task = vm.Destroy_Task()
        deadline = time.monotonic() + 10
        while _properties(si, task, "info.state")["info.state"] not in ("success", "error"):
            assert time.monotonic() < deadline
            time.sleep(0.05)


def _put(vcsim: Vcsim, url: str, body: bytes | Path) -> tuple[int, str]:
    """PUT to a lease URL the way a client streams a disk: Content-Length, no session cookie."""
    parts = urlsplit(url)
    connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=30,
                                             context=vcsim.ssl_context())
    try:
        size = body.stat().st_size if isinstance(body, Path) else len(body)
        headers = {"Content-Length": str(size), "Content-Type": "application/x-vnd.vmware-streamVmdk"}
        if isinstance(body, Path):
            with body.open("rb") as stream:
                connection.request("PUT", parts.path, body=stream, headers=headers)
                response = connection.getresponse()
        else:
            connection.request("PUT", parts.path, body=body, headers=headers)
            response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def _fetch(host: Host, job: Import, path: str, dest: Path) -> bytes:
    download(host, job.datastore, path, dest)
    return dest.read_bytes()


@pytest.mark.parametrize("encoder", ["qemu-img", "kit"])
def test_streamoptimized_import_arrives_as_the_vms_flat_disk(
    si: Any, vcsim: Vcsim, vsphere_host: Host, importing: Import, disk_images: tuple[Path, Path, Path],
    tmp_path: Path, encoder: str,
) -> None:
    raw, by_qemu, by_kit = disk_images
    stream = by_qemu if encoder == "qemu-img" else by_kit
    assert stream.stat().st_size < DISK_SIZE * 0.6  # the zero half is not sent
    assert _put(vcsim, importing.url, stream) == (200, "")
    importing.lease.HttpNfcLeaseComplete()

    flat = tmp_path / "flat.vmdk"
    assert _fetch(vsphere_host, importing, importing.flat, flat) == raw.read_bytes()
    descriptor = _fetch(vsphere_host, importing, importing.descriptor, tmp_path / "disk.vmdk").decode()
    extent = importing.flat.rsplit("/", 1)[-1]
    assert 'createType="monolithicFlat"' in descriptor
    assert f'RW {DISK_SIZE // SECTOR} FLAT "{extent}" 0' in descriptor
    # the pair is a disk qemu-img reads as the original
    (tmp_path / extent).write_bytes(flat.read_bytes())
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", str(raw), str(tmp_path / "disk.vmdk")],
                   check=True, timeout=60, capture_output=True)
    # on the datastore, the zero half stayed a hole
    assert vcsim.datastore_dir is not None
    [stored] = list(vcsim.datastore_dir.rglob(extent))
    assert stored.stat().st_blocks * 512 <= DISK_SIZE // 2 + MIB


def _first_grain_marker(stream: bytes) -> int:
    """Byte offset of the first grain's marker: the header's overHead, in sectors."""
    return int.from_bytes(stream[64:72], "little") * SECTOR


def _truncated(stream: bytes) -> bytes:
    return stream[: len(stream) // 2]


def _grain_beyond_capacity(stream: bytes) -> bytes:
    at = _first_grain_marker(stream)
    capacity = int.from_bytes(stream[12:20], "little")
    return stream[:at] + capacity.to_bytes(8, "little") + stream[at + 8:]


def _bad_zlib(stream: bytes) -> bytes:
    at = _first_grain_marker(stream) + 12 + 100  # inside the first grain's deflate data
    return stream[:at] + bytes([stream[at] ^ 0xFF]) + stream[at + 1:]


def _oversized_grain(stream: bytes) -> bytes:
    """The header claims grains of 64 sectors, the stream's hold 128."""
    return stream[:20] + (64).to_bytes(8, "little") + stream[28:]


def _cut_after_first_grain(stream: bytes) -> bytes:
    """A stream that promised a footer (directory at the end), cut where a grain ends."""
    assert int.from_bytes(stream[56:64], "little") == 2**64 - 1  # gdOffset: GD_AT_END
    at = _first_grain_marker(stream)
    size = int.from_bytes(stream[at + 8 : at + 12], "little")
    return stream[: -(-(at + 12 + size) // SECTOR) * SECTOR]


@pytest.mark.parametrize(("encoder", "damage", "reason"), [
    ("qemu-img", _truncated, "truncated"),
    ("qemu-img", _grain_beyond_capacity, "beyond the capacity"),
    ("qemu-img", _bad_zlib, "grain at sector 0"),
    ("qemu-img", _oversized_grain, "more than 32768 bytes"),
    ("kit", _cut_after_first_grain, "no end-of-stream marker"),
])
def test_a_bad_stream_is_refused_and_the_disk_already_there_stays(
    si: Any, vcsim: Vcsim, vsphere_host: Host, importing: Import, disk_images: tuple[Path, Path, Path],
    tmp_path: Path, encoder: str, damage: Any, reason: str,
) -> None:
    raw, by_qemu, by_kit = disk_images
    stream = by_qemu if encoder == "qemu-img" else by_kit
    assert _put(vcsim, importing.url, stream)[0] == 200
    before_flat = _fetch(vsphere_host, importing, importing.flat, tmp_path / "flat-before")
    before_descriptor = _fetch(vsphere_host, importing, importing.descriptor, tmp_path / "desc-before")
    assert before_flat == raw.read_bytes()

    status, message = _put(vcsim, importing.url, damage(stream.read_bytes()))
    assert status == 500
    assert reason in message

    assert _fetch(vsphere_host, importing, importing.flat, tmp_path / "flat-after") == before_flat
    assert _fetch(vsphere_host, importing, importing.descriptor, tmp_path / "desc-after") == before_descriptor
    assert vcsim.datastore_dir is not None
    vm_dir = importing.descriptor.rsplit("/", 1)[0]
    assert not [path for directory in vcsim.datastore_dir.rglob(vm_dir)
                for path in directory.iterdir() if ".upload-" in path.name]


def test_other_bodies_are_stored_as_sent_and_other_sparse_vmdks_refused(
    si: Any, vcsim: Vcsim, vsphere_host: Host, importing: Import, disk_images: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    body = b"# Disk DescriptorFile\n" + os.urandom(1000)
    assert _put(vcsim, importing.url, body) == (200, "")
    assert _fetch(vsphere_host, importing, importing.descriptor, tmp_path / "as-sent") == body

    raw, _, _ = disk_images
    sparse = tmp_path / "monolithic-sparse.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(sparse)],
                   check=True, timeout=60)
    status, message = _put(vcsim, importing.url, sparse)
    assert status == 500
    assert "not streamOptimized" in message
    assert _fetch(vsphere_host, importing, importing.descriptor, tmp_path / "still") == body
