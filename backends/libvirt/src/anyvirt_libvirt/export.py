"""Writing a stopped VM's disks out as local files (backup, cross-platform moves).

Each volume is streamed from the daemon (``virStorageVolDownload``) chunk by
chunk into a file, so nothing is held in memory and the host may be remote.
A linked clone's disk is an overlay: its backing files are streamed too, the
local top is re-pointed at the local copies, and ``qemu-img convert`` makes one
standalone qcow2 of the chain.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import libvirt

from anyvirt.errors import AnyvirtError, InvalidSpec, TaskFailed
from anyvirt.kit import streams
from anyvirt.model import ExportedDisk, PowerState, VMInfo
from anyvirt.tasks import Job
from anyvirt_libvirt import domxml
from anyvirt_libvirt.disks import parse_disks, refuse_uncopyable
from anyvirt_libvirt.site import Site
from anyvirt_libvirt.storage import image_facts, run_qemu_img

CHUNK = 1024 * 1024


def copyable_disks(site: Site, vm_id: str, what: str) -> tuple[str, VMInfo]:
    """The VM's name and its (stopped) facts, refusing disks that cannot be copied out."""
    with site.domain(vm_id, what) as dom:
        name = dom.name()
        xml = dom.XMLDesc(0)
        resolved = parse_disks(xml, dom.connect())
    info = domxml.parse_vm_info(xml, PowerState.STOPPED, "shutoff", None, None, resolved)
    refuse_uncopyable(resolved, name, "export the disks of")
    return name, info


def export_disks(site: Site, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
    name, info = copyable_disks(site, vm_id, "export disks")
    readers = {d.path: _reader(site, name, d.path) for d in info.disks if d.path}
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for index, disk in enumerate(info.disks):
        job.check()
        job.progress(100.0 * index / max(1, len(info.disks)), f"exporting {disk.id}")
        if not disk.path:
            continue
        target = dest_dir / f"{disk.id or f'disk{index}'}.qcow2"
        if readers[disk.path] == "local":
            run_qemu_img(["convert", "-U", "-O", "qcow2", "--", disk.path, str(target)])
        else:
            _download_chain(site, disk.path, target, job)
        size, fmt = image_facts(str(target))
        out.append(ExportedDisk(id=disk.id, path=str(target), format=fmt, size_bytes=size,
                                bus=disk.bus))
    return out


def _reader(site: Site, vm_name: str, path: str) -> str:
    """How a disk's content is read: "pool" (streamed from the daemon) or "local" (a file
    this machine reads directly: the embedded store, or a disk outside every pool of a
    daemon on this machine). Decided for every disk before anything is written."""
    if site.embed_root is not None:
        return "local"
    if site.store_of(path) is not None:
        return "pool"
    if site.is_local_socket and os.access(path, os.R_OK):
        return "local"
    raise InvalidSpec(
        f"cannot export the disks of {vm_name!r}: {path} is outside every storage pool of "
        f"{site.safe_uri}, and libvirt streams only pool volumes (put it in a pool)"
    )


def _download_chain(site: Site, path: str, target: Path, job: Job) -> None:
    with tempfile.TemporaryDirectory(prefix="anyvirt-export-", dir=target.parent) as tmp:
        chain: list[Path] = []
        current: str | None = path
        while current:
            local = Path(tmp) / f"layer{len(chain)}"
            _download(site, current, local, job)
            chain.append(local)
            current = site.volume_facts(current)[1]
        # re-point each layer at the local copy of its backing file (metadata only)
        for upper, lower in itertools.pairwise(chain):
            run_qemu_img(["rebase", "-u", "-f", "qcow2", "-F", _format(lower), "-b", str(lower),
                          "--", str(upper)])
        if len(chain) == 1 and _format(chain[0]) == "qcow2":
            shutil.move(str(chain[0]), target)
        else:
            run_qemu_img(["convert", "-O", "qcow2", "--", str(chain[0]), str(target)])


def _physical_size(vol: libvirt.virStorageVol) -> int | None:
    """The bytes a download of ``vol`` carries (the file's length), where the daemon says."""
    try:
        return int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
    except (libvirt.libvirtError, AttributeError):
        return None


def _format(path: Path) -> str:
    with open(path, "rb") as f:
        return "qcow2" if f.read(4) == b"QFI\xfb" else "raw"


def _download(site: Site, path: str, local: Path, job: Job) -> None:
    """One volume's file streamed from the daemon, counted against the length the daemon
    declares for it (its physical size): a stream that ends early or runs long fails
    rather than leave a short copy to be mistaken for the disk."""
    what = f"downloading volume {path}"
    with site.link.call(what) as conn:
        vol = conn.storageVolLookupByPath(path)
        meter = streams.Meter(_physical_size(vol), job=job, what=what, error=TaskFailed)
        stream = conn.newStream(0)
        vol.download(stream, 0, 0, 0)
        try:
            with open(local, "wb") as out:
                while True:
                    chunk = stream.recv(CHUNK)
                    if isinstance(chunk, int) or not chunk:
                        break
                    meter.add(chunk)
                    out.write(chunk)
            stream.finish()
            meter.finish()
        except BaseException as failure:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            local.unlink(missing_ok=True)
            if isinstance(failure, OSError):  # the local side: a full disk, a lost directory
                raise TaskFailed(f"{what}: writing {local} failed: {failure}") from failure
            raise
    os.chmod(local, 0o600)


def disks_in_place(site: Site, vm_id: str, job: Job) -> list[ExportedDisk] | None:
    """The disks as the files they are, when every one is a standalone image (no backing
    chain) on this machine that this process can read: a move then reads them in place
    instead of copying them out first. None otherwise (a remote daemon, an overlay, a file
    this process may not read), and the caller exports as usual."""
    if site.embed_root is None and not site.is_local_socket:
        return None
    _name, info = copyable_disks(site, vm_id, "read disks in place")
    out = []
    for index, disk in enumerate(info.disks):
        job.check()
        if not disk.path:
            continue
        if not os.access(disk.path, os.R_OK) or not os.path.isfile(disk.path):
            return None
        try:
            size, fmt = image_facts(disk.path)  # untrusted: an overlay is refused here
        except AnyvirtError:
            return None
        out.append(ExportedDisk(id=disk.id or f"disk{index}", path=disk.path, format=fmt,
                                size_bytes=size, bus=disk.bus))
    return out
