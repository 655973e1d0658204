"""A stopped VM's disks read from the node as the target's import consumes them: no staging copy.

:mod:`anyvirt_proxmox.node_disks` copies each volume whole into a temp dir
before the import can start. Here each volume (its path and format from PVE's
storage API, never probed) is served to ``qemu-storage-daemon`` as an NBD export
(:mod:`anyvirt.kit.nbd_server`) whose reads are ranged reads on the node
(:mod:`anyvirt.kit.windowed_reads`): with OpenSSH's client, one ``dd`` with byte
offsets a window, every window riding on one ControlMaster login (no handshake
each); else paramiko's SFTP with the window's requests sent at once. The daemon
decodes the image (a linked clone flattened onto its base) into a read-only FUSE
raw view (:mod:`anyvirt.kit.raw_view`) that the import reads: only the image's
metadata and data cross the wire, once, while the import runs.

A qcow2 that has a backing file is read with the base PVE's own volume name
gives it (a linked clone's ``100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2``
is stacked on ``100/base-100-disk-0.qcow2``), located through the API like any
volume; the backing path written in the image is never read. One that PVE
names no base for is not streamed (the copy path refuses it as any image with
a backing file). Where this machine has no raw views, the disks are copied as
before.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
import shlex
import stat
import struct
from collections.abc import Iterator
from typing import Any, Protocol

from attrs import frozen

from anyvirt.errors import AnyvirtError
from anyvirt.kit import nbd_server, raw_view, ssh
from anyvirt.kit.served_views import ServedDisk, layer_export, served_views
from anyvirt.kit.windowed_reads import Window, WindowedReader
from anyvirt.model import ExportedDisk
from anyvirt.tasks import Job
from anyvirt_proxmox import node_disks
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.node_disks import NodeAccess, NodeVolume

#: sequential runs double up to this: fewer processes started for a long run
WINDOW = 64 * 1024 * 1024
#: a window is a process started over SSH (tens of milliseconds, far more on a busy machine):
#: reading a few MiB past a seek costs less than one more window
MIN_WINDOW = 4 * 1024 * 1024
#: small reads kept per volume: a qcow2's tables (those of 32 GiB), read by the chain's
#: map and again by the view's decoder and the verification's map, cross SSH once
REMEMBER = 4 * 1024 * 1024
FORMATS = ("raw", "qcow2")
QCOW2_MAGIC = b"QFI\xfb"
#: PVE's name for a linked clone's volume on file storage: ``<base vmid>/<base>/<vmid>/<name>``
#: (bases may stack), the part before the last ``/<vmid>/<name>`` being the base volume
LINKED = re.compile(r"^(?P<base>(?:\d+/[^/]+/)*\d+/base-[^/]+)/\d+/[^/]+$")


@frozen
class Layer:
    path: str  # on the node
    format: str
    length: int  # the file's length there (what the NBD export serves)


class Reach(Protocol):
    """The node's files as their lengths and ranged reads."""

    def length(self, path: str, fallback: int, what: str) -> int: ...

    def window(self, path: str, offset: int, length: int, what: str) -> Window: ...

    def zeros(self, path: str, length: int, what: str) -> nbd_server.Status | None: ...


class _OverOpenSsh:
    def __init__(self, link: ssh.Multiplexed) -> None:
        self.link = link

    def length(self, path: str, fallback: int, what: str) -> int:
        # a regular file's own length; a block device (an LV, a zvol) is the volume's size
        out = self.link.run(f"stat -L -c %F:%s -- {shlex.quote(path)}", what).decode()
        kind, _, size = out.strip().rpartition(":")
        return int(size) if kind.startswith("regular") else fallback  # "regular empty file"

    def window(self, path: str, offset: int, length: int, what: str) -> Window:
        return self.link.read_range(path, offset, length, what)

    def zeros(self, path: str, length: int, what: str) -> nbd_server.Status | None:
        # the node's own SEEK_DATA/SEEK_HOLE, through the qemu-img every PVE node has
        try:
            out = self.link.run(f"qemu-img map --output=json -f raw -- {shlex.quote(path)}", what)
        except AnyvirtError:
            return None  # no answer: every byte counts as data, as without a map
        return map_status(out, length)


class _OverSftp:
    def __init__(self, session: Any) -> None:
        self.session = session

    def length(self, path: str, fallback: int, what: str) -> int:
        with ssh.transfer_errors(what):
            info = self.session.stat(path)
        regular = info.st_mode is not None and stat.S_ISREG(info.st_mode)
        return int(info.st_size or 0) if regular else fallback

    def window(self, path: str, offset: int, length: int, what: str) -> Window:
        return ssh.sftp_window(self.session, path, offset, length, what)

    def zeros(self, path: str, length: int, what: str) -> nbd_server.Status | None:
        return None  # SFTP cannot ask where a file's holes are


@contextlib.contextmanager
def _reach(access: NodeAccess, node: str) -> Iterator[Reach]:
    endpoint = access.endpoint(node)
    if node_disks.openssh_wanted():
        with ssh.multiplexed(endpoint, key_filename=access.key_filename,
                             known_hosts=access.known_hosts, timeout=access.timeout) as link:
            yield _OverOpenSsh(link)
    else:
        with ssh.sftp(endpoint, key_filename=access.key_filename, known_hosts=access.known_hosts,
                      timeout=access.timeout) as session:
            yield _OverSftp(session)


def map_status(out: bytes, length: int) -> nbd_server.Status | None:
    """The NBD block status of a raw file of ``length`` bytes from ``qemu-img map
    --output=json`` of it on the node. That is the node's output, so it is only data: it
    must be extents from 0, one after another, covering the file, or it is not used."""
    try:
        found = json.loads(out)
    except ValueError:
        return None
    extents: list[tuple[int, int, bool]] = []
    at = 0
    for item in found if isinstance(found, list) else [None]:
        if not isinstance(item, dict):
            return None
        start, size, data, zero = (item.get(k) for k in ("start", "length", "data", "zero"))
        if (type(start) is not int or type(size) is not int or start != at or size <= 0
                or not isinstance(data, bool) or not isinstance(zero, bool)):
            return None
        extents.append((start, size, zero or not data))
        at += size
    if at < length:
        return None
    starts = [start for start, _size, _zero in extents]

    def status(offset: int, count: int) -> list[tuple[int, bool]]:
        end = min(offset + count, length)
        if offset >= end:
            return [(count, True)]  # the sector-rounded tail past the file reads as zeros
        runs: list[tuple[int, bool]] = []
        index, pos = bisect.bisect_right(starts, offset) - 1, offset
        while pos < end:
            start, size, zero = extents[index]
            step = min(start + size, end) - pos
            if runs and runs[-1][1] == zero:
                runs[-1] = (runs[-1][0] + step, zero)
            else:
                runs.append((step, zero))
            pos, index = pos + step, index + 1
        return runs

    return status


def base_volid(volid: str) -> str | None:
    """The base volume PVE's name for ``volid`` gives it (a linked clone's), else None."""
    storage, _, volname = volid.partition(":")
    match = LINKED.match(volname)
    return f"{storage}:{match['base']}" if match else None


def _has_backing(reach: Reach, layer: Layer, what: str) -> bool:
    """Whether a qcow2's header names a backing file (only whether: the name is not used)."""
    header = _read(reach, layer, 0, 20, what)
    if header[:4] != QCOW2_MAGIC:
        return False  # not a qcow2 after all: qemu-storage-daemon refuses it, saying so
    return bool(struct.unpack(">Q", header[8:16])[0])


def _read(reach: Reach, layer: Layer, offset: int, length: int, what: str) -> bytes:
    reader = WindowedReader(lambda at, size: reach.window(layer.path, at, size, what),
                            layer.length, what)
    try:
        return reader.read_at(offset, min(length, layer.length - offset))
    finally:
        reader.close()


def _chain(inv: Inventory, node: str, reach: Reach, vol: NodeVolume,
           vm_id: str) -> list[Layer] | None:
    """The volume's layers from the top down to its base, or None where it cannot stream."""
    which = f"disk {vol.disk_id} of VM {vm_id}"
    if vol.format not in FORMATS:
        return None
    layers = [Layer(vol.path, vol.format, reach.length(vol.path, vol.size, f"reading {which}"))]
    volid = vol.volid
    while layers[-1].format == "qcow2" and _has_backing(reach, layers[-1], f"reading {which}"):
        base = base_volid(volid)
        if base is None:
            return None  # a backing file PVE does not name: never followed
        path, fmt, size = node_disks.locate(inv, node, base, f"the base {base} of {which}")
        if fmt not in FORMATS:
            return None
        layers.append(Layer(path, fmt, reach.length(path, size, f"reading {base}")))
        volid = base
    return layers


def _readers(reach: Reach, chains: list[list[Layer]]) -> dict[str, WindowedReader]:
    readers = {}
    for index, chain in enumerate(chains):
        for depth, layer in enumerate(chain):
            what = f"reading {layer.path} on the node"

            def open_window(offset: int, length: int, path: str = layer.path,
                            what: str = what) -> Window:
                return reach.window(path, offset, length, what)

            readers[layer_export(index, depth)] = WindowedReader(
                open_window, layer.length, what, max_window=WINDOW, min_window=MIN_WINDOW,
                remember=REMEMBER)
    return readers


@contextlib.contextmanager
def streamed_disks(inv: Inventory, access: NodeAccess, vm_id: str,
                   job: Job) -> Iterator[list[ExportedDisk] | None]:
    """The VM's disks as raw views read from the node while the block lasts; None (and no
    connection left open) where some disk cannot stream or this machine has no raw views:
    the caller copies them as before."""
    if not raw_view.available():
        yield None
        return
    node = inv.node_of(vm_id, refresh=True)
    found = node_disks.volumes(inv, vm_id, node)
    with contextlib.ExitStack() as link:
        reach = link.enter_context(_reach(access, node))
        chains: list[list[Layer]] = []
        for vol in found:
            job.check()
            chain = _chain(inv, node, reach, vol, vm_id)
            if chain is None:
                break
            chains.append(chain)
        if len(chains) < len(found):
            link.close()
            yield None
            return
        readers = _readers(reach, chains)
        # a raw layer's holes are asked of the node, so the view answers SEEK_DATA: the
        # import and the verification then skip the zeros instead of carrying them
        zeros = {layer_export(index, depth): reach.zeros(layer.path, layer.length,
                                                         f"mapping {layer.path} on the node")
                 for index, chain in enumerate(chains) for depth, layer in enumerate(chain)
                 if layer.format == "raw"}
        exports = {key: nbd_server.Export(size=reader.size, read_at=reader.read_at,
                                          status=zeros.get(key))
                   for key, reader in readers.items()}
        served = [ServedDisk(vol.disk_id, [(layer_export(index, depth), layer.format)
                                           for depth, layer in enumerate(chain)],
                             vol.size, vol.bus)
                  for index, (vol, chain) in enumerate(zip(found, chains, strict=True))]
        try:
            with served_views(exports, served, job) as out:
                yield out
        finally:
            for reader in readers.values():
                reader.close()


__all__ = ["base_volid", "streamed_disks"]
