"""Disks from image files through an import lease: only the data goes over the wire.

``ResourcePool.ImportVApp`` creates the VM with blank thin disks and hands out
an ``HttpNfcLease`` with one upload URL per disk. Each disk is POSTed there as
a streamOptimized VMDK (:mod:`anyvirt.kit.stream_vmdk`): the grains that hold
data, never the zeros or holes, each behind a marker naming where it goes. The
host writes them into the new disk. This is the path VMware's own OVF tools
take; a 1 GiB disk half zeros sends about 0.5 GiB.

The stream is made on the fly from the data ``qemu-img map`` reports, read
from the image file where the map places it (raw, uncompressed qcow2) or else
through the kit's raw view of the image, so its length is known before the
first byte and no temporary copy is made. The lease is kept alive while the
bytes go (vCenter drops an idle lease after minutes), completed when every
disk arrived, and aborted on any error; the caller removes a VM the failed
import left.

A host that takes the upload but keeps nothing (stock vcsim discards what an
import lease receives) is found right after the lease completes: the new
disk's descriptor must name a flat extent of the disk's size. Then
:class:`DiscardedUpload` is raised and the caller imports through the
datastore instead (:mod:`anyvirt_vsphere.image_import`), remembering it for
the connection.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attrs import frozen

from anyvirt.errors import AnyvirtError, ConnectionFailed, TaskFailed, Timeout
from anyvirt.kit import image_maps, polling, qemu_img, streams
from anyvirt.kit.readahead import read_ahead
from anyvirt.kit.stream_vmdk import GRAIN_SIZE, SECTOR, StreamOptimizedEncoder
from anyvirt.model import DiskSpec, VMSpec, evolve
from anyvirt.tasks import Job
from anyvirt_vsphere import datastore_files
from anyvirt_vsphere.errors import fault_message
from anyvirt_vsphere.image_import import (
    check_local_image,
    disk_bytes,
    is_local_image,
    raw_bytes,
)
from anyvirt_vsphere.inventory import split_datastore_path
from anyvirt_vsphere.sdk import vim, vmodl

READY_TIMEOUT = 120.0
KEEPALIVE_EVERY = 30.0  # seconds between HttpNfcLeaseProgress calls; leases time out after minutes
CONTENT_TYPE = "application/x-vnd.vmware-streamVmdk"
DIRECT_FORMATS = ("raw", "qcow2")  # formats whose mapped data is read from the file itself


def _file_name(path: str) -> str:
    """The file name of a datastore path, ``[ds] dir/name.vmdk`` -> ``name.vmdk``."""
    return split_datastore_path(path)[1].rsplit("/", 1)[-1]


def _extent_name(vmdk: str) -> str:
    """The name the stream's own descriptor gives its extent (the disk's file name, in the
    characters a descriptor takes)."""
    base = _file_name(vmdk).removesuffix(".vmdk")
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in base) or "disk"


class DiscardedUpload(Exception):
    """The host accepted the import lease's bytes and kept none of them."""


def blank_disks(spec: VMSpec, job: Job) -> tuple[VMSpec, dict[int, qemu_img.ImageInfo]]:
    """``spec`` with every local image replaced by a blank disk of the image's size
    (sectors, at least the size asked for), and the checked images by disk index."""
    found: dict[int, qemu_img.ImageInfo] = {}
    disks: list[DiskSpec] = []
    for index, disk in enumerate(spec.disks):
        if not is_local_image(disk):
            disks.append(disk)
            continue
        info = check_local_image(str(disk.image), job, disk.format)
        found[index] = info
        disks.append(evolve(disk, image=None, format=None,
                            size_gib=disk_bytes(info, disk) / 1024**3))
    return evolve(spec, disks=disks), found


def import_vm(driver: Any, config: Any, pool: Any, folder: Any, host: Any,
              images: dict[int, qemu_img.ImageInfo], sizes: Sequence[int], job: Job) -> Any:
    """Create the VM from ``config`` through ImportVApp and upload ``images`` (by disk
    index; ``sizes`` are every disk's bytes) into its disks; returns the VM's reference.
    On failure the lease is aborted; the VM it made is the caller's to remove."""
    session = driver.session
    what = "importing the disk images"
    spec = vim.vm.VmImportSpec(configSpec=config)
    lease = session.call(lambda: pool.ImportVApp(spec=spec, folder=folder, host=host), what,
                         read=False)
    try:
        info = _wait_ready(session, lease, job)
        targets = _disk_urls(driver, info, len(sizes))
        done = [0]
        total = sum(sizes[i] for i in images) or 1
        with _kept_alive(session, lease, lambda: min(99, int(100 * done[0] / total))):
            for position, (index, image) in enumerate(sorted(images.items())):
                low = 10 + 85.0 * position / len(images)
                high = 10 + 85.0 * (position + 1) / len(images)
                _send_disk(driver, targets[index], image, sizes[index], job, (low, high))
                done[0] += sizes[index]
        job.check()  # cancelled or out of time once the bytes are in: abort, never complete
        session.call(lease.HttpNfcLeaseComplete, "completing the import", read=False)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            fault = vmodl.fault.SystemError(reason=str(exc)[:200] or type(exc).__name__)
            session.call(lambda: lease.HttpNfcLeaseAbort(fault=fault), "aborting the import",
                         read=False)
        raise
    _check_kept(driver, targets, images, sizes)
    return info.entity


def _wait_ready(session: Any, lease: Any, job: Job) -> Any:
    """The lease's info once the host is ready to take the disks (the kit's polling), within
    the job's deadline and at most READY_TIMEOUT."""
    deadline = time.monotonic() + READY_TIMEOUT
    what = "reading the import lease"

    def check() -> polling.Status[Any]:
        state = session.call(lambda: lease.state, what, read=True)
        if state == vim.HttpNfcLease.State.ready:
            return polling.succeeded(session.call(lambda: lease.info, what, read=True))
        if state == vim.HttpNfcLease.State.error:
            error = session.call(lambda: lease.error, what, read=True)
            return polling.failed(TaskFailed(f"the import was refused: {fault_message(error)}"))
        if time.monotonic() > deadline:
            return polling.failed(Timeout(f"the import lease was not ready within "
                                          f"{READY_TIMEOUT:g} s"))
        return polling.running()

    return polling.poll(check, job, "waiting for the import lease")


@frozen
class Target:
    """Where one disk's stream goes: the URL, the thumbprint its TLS certificate must have
    (empty: verified as the session is), and the disk's descriptor on its datastore
    (``[ds] dir/name.vmdk``)."""

    url: str
    thumbprint: str
    vmdk: str


def _disk_urls(driver: Any, info: Any, count: int) -> list[Target]:
    """The upload URL of each disk, in the order the disks were given. The host names each
    URL by the disk's file (``targetId``); the VM's disks list those files in order."""
    devices = driver.collector.one(info.entity, vim.VirtualMachine, ("config.hardware.device",),
                                   what="reading the imported VM's disks")
    files = [d.backing.fileName for d in (devices.get("config.hardware.device", []) if devices
                                          else []) if isinstance(d, vim.vm.device.VirtualDisk)]
    urls = [u for u in (info.deviceUrl or []) if u.disk]
    if len(files) != count or len(urls) != count:
        raise TaskFailed(f"the import lease offers {len(urls)} disk URLs for {count} disks")
    by_file = {str(u.targetId or ""): u for u in urls}
    out = []
    for position, name in enumerate(files):
        chosen = by_file.get(_file_name(name), urls[position])
        out.append(Target(_secure_url(driver, str(chosen.url)), str(chosen.sslThumbprint or ""),
                          name))
    return out


def _secure_url(driver: Any, url: str) -> str:
    """``url`` if it keeps the session's transport; over TLS, a lease URL on plain HTTP is
    refused before any byte goes (ESXi hands out ``https://*/nfc/...``; govmomi keeps the
    scheme it is given, so there is no upgrade to guess at). The upload would carry the
    session cookie, and the disk, in clear text."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and driver.session.plain_http):
        return url
    raise ConnectionFailed(
        f"the import lease offers a disk upload URL over {scheme or 'no scheme'}:// although "
        "the session is TLS; refusing to send the session cookie or the disk in clear text")


@contextlib.contextmanager
def _kept_alive(session: Any, lease: Any, percent: Any) -> Iterator[None]:
    """Report progress on the lease now and then, so the host does not drop it mid-upload."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(KEEPALIVE_EVERY):
            with contextlib.suppress(Exception):
                session.call(lambda: lease.HttpNfcLeaseProgress(percent=percent()),
                             "reporting import progress", read=False)

    thread = threading.Thread(target=tick, name="anyvirt-nfc-keepalive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _send_disk(driver: Any, target: Target, image: qemu_img.ImageInfo, size: int, job: Job,
               span: tuple[float, float]) -> None:
    what = f"uploading {image.path} into {target.vmdk}"
    found = image_maps.data_map(image.path, image.format, granularity=GRAIN_SIZE, job=job)  # whole grains
    name = _extent_name(target.vmdk)
    with contextlib.ExitStack() as stack:
        if found.layout is not None and image.format in DIRECT_FORMATS:
            # the data sits in the file as it is (raw, uncompressed qcow2): read it there
            raw, upload_span, layout = Path(image.path), span, found.layout
        else:  # decoded on the way (the kit's raw view), or converted where there is none
            raw, upload_span = stack.enter_context(raw_bytes(image, job, span))
            layout = None
        encoder = stack.enter_context(StreamOptimizedEncoder(
            raw, size, found.extents, source_size=image.virtual_size, name=name,
            layout=layout))
        ahead = stack.enter_context(read_ahead(encoder))  # grains read while TLS sends
        # counted, not hashed: the stream is an encoding; the disk is checked by its read-back
        body = streams.MeteredReader(ahead, encoder.length, job=job, what=what, span=upload_span,
                                     hashed=False)
        _post(driver, target, body, encoder.length, what)
        if body.transfer is None:
            raise ConnectionFailed(f"{what}: the server answered after {body.meter.count} "
                                   f"of {encoder.length} bytes")


def _post(driver: Any, target: Target, body: streams.MeteredReader, length: int,
          what: str) -> None:
    parts = urlsplit(target.url)
    same_host = parts.hostname in ("*", None)  # "*": the server this session speaks to
    headers = {"Content-Type": CONTENT_TYPE, "Content-Length": str(length)}
    if same_host:  # the session cookie goes to the server it came from, nowhere else
        headers["Cookie"] = driver.session.cookie
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    datastore_files.send(driver, "POST", path, body, headers, what,
                         host=None if same_host else parts.hostname,
                         port=None if same_host else parts.port,
                         thumbprint=target.thumbprint, plain=parts.scheme == "http")


def _check_kept(driver: Any, targets: Sequence[Target], images: dict[int, qemu_img.ImageInfo],
                sizes: Sequence[int]) -> None:
    """Each uploaded disk's descriptor must name an extent of the disk's size; a host that
    discarded the stream left the blank disk it made (stock vcsim: an empty file)."""
    for index in images:
        datastore, rel = split_datastore_path(targets[index].vmdk)
        text = io.BytesIO()
        try:
            datastore_files.fetch(driver, datastore or "", rel, text, max_size=64 * 1024)
        except AnyvirtError as exc:
            raise DiscardedUpload(f"the disk's descriptor cannot be read: {exc}") from exc
        sectors = sizes[index] // SECTOR
        lines = text.getvalue().decode("utf-8", "replace").splitlines()
        if not any(line.split()[:2] in (["RW", str(sectors)], ["RDONLY", str(sectors)])
                   for line in lines if line.strip()):
            raise DiscardedUpload(f"{targets[index].vmdk} holds no extent of {sectors} sectors")


__all__ = ["DiscardedUpload", "blank_disks", "import_vm"]
