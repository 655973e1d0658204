"""A stopped VM's disks with differencing chains (snapshots, linked clones), streamed:
each chain is read here as the guest sees it (:mod:`anyvirt_virtualbox.vdi_chain`) while
the consumer reads, with no ``clonemedium`` copy first.

Each disk is served as a raw NBD export on a private socket (``anyvirt.kit.nbd_server``)
and viewed as a raw file through ``qemu-storage-daemon``'s FUSE export
(``anyvirt.kit.raw_view``), the path every import already reads. The export answers
NBD block status from the chain's maps, so the view answers ``SEEK_DATA`` and an import
that asks (vSphere's streamOptimized upload) skips the chain's zeros unread. Where any
disk's chain is not all VDI images this process reads as VirtualBox's own files (see
:mod:`anyvirt_virtualbox.in_place`), or where no raw view can be made (no FUSE),
nothing is streamed and the caller exports with ``clonemedium``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from anyvirt.kit import nbd_server, raw_view
from anyvirt.kit.served_views import ServedDisk, served_views
from anyvirt.model import MIB, ExportedDisk
from anyvirt.tasks import Job
from anyvirt_virtualbox import machines, vdi_chain, vminfo
from anyvirt_virtualbox.in_place import STOPPED
from anyvirt_virtualbox.runner import VBoxManage


@contextlib.contextmanager
def streamed_disks(vbox: VBoxManage, vm_id: str, job: Job) -> Iterator[list[ExportedDisk] | None]:
    """The VM's disks as raw views read from their chains while the block lasts, or None."""
    if not raw_view.available():
        yield None
        return
    info = machines.show(vbox, vm_id)
    by_uuid = machines.media(vbox)
    disks: list[tuple[vminfo.Attachment, list[vdi_chain.Layer]]] = []
    for att in vminfo.attachments(info):
        if att.dvd:
            continue
        medium = by_uuid.get(att.image_uuid or "")
        chain = vdi_chain.media_chain(medium, by_uuid) if medium is not None else None
        layers = vdi_chain.matching_layers(chain) if chain else None
        if medium is None or layers is None or medium.capacity_mib is None or abs(
                layers[0].disk_size - medium.capacity_mib * MIB) >= MIB:
            disks = []
            break
        disks.append((att, layers))
    if not disks or info.get("VMState") not in STOPPED:
        yield None
        return
    with contextlib.ExitStack() as stack:
        exports = {}
        for index, (_att, layers) in enumerate(disks):
            job.check()
            reader = stack.enter_context(vdi_chain.opened(layers))
            exports[f"disk{index}"] = nbd_server.Export(size=reader.size, read_at=reader.read_at,
                                                        status=reader.status)
        served = [ServedDisk(att.id, [(f"disk{index}", "raw")], exports[f"disk{index}"].size,
                             att.bus) for index, (att, _layers) in enumerate(disks)]
        with served_views(exports, served, job) as out:
            yield out
