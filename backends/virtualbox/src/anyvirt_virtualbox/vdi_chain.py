"""A VirtualBox chain of VDI images (a snapshot's or a linked clone's differencing images
over their base), read as the guest sees it, a range at a time.

qemu-img cannot read a differencing VDI ("unsupported VDI image (non-NULL link UUID)"),
so without this a chain must first be flattened into a copy by ``clonemedium``. The
VDI 1.1 layout is small: a header, a map of one 32-bit entry per block, and the blocks.
An entry is a block's index in the file, or "free" (in a differencing image: read the
parent; in a base: zeros), or "zero" (zeros, whatever the parents hold); VirtualBox's
own VDI backend (``VDICore.h``) and qemu's ``block/vdi.c`` read it so.

Everything read from a file is checked against VirtualBox's record of the medium first:
its UUID in the header, its link to the parent's UUID, a differencing type for every
layer but the base, one block size throughout. A chain that does not match is not read
(the caller falls back to ``clonemedium``); a block past the end of its file fails the
read, never turns into zeros.
"""

from __future__ import annotations

import contextlib
import os
import struct
import uuid
from collections.abc import Iterator, Sequence

import attrs

from anyvirt.errors import TaskFailed
from anyvirt.model import MIB
from anyvirt_virtualbox.listings import Medium

SIGNATURE = 0xBEDA107F
VERSION_1_1 = 0x00010001
HEADER_AT = 0x48  # the header proper starts after the 64-byte text line and signature/version
MIN_HEADER = 0x180  # through uuid_parent
TYPE_DYNAMIC, TYPE_STATIC, TYPE_DIFF = 1, 2, 4
FREE, ZERO = 0xFFFFFFFF, 0xFFFFFFFE
NIL_UUID = "00000000-0000-0000-0000-000000000000"
MAX_MAP = 64 * MIB  # 16 M blocks: 16 TiB at VirtualBox's 1 MiB blocks


@attrs.frozen
class Layer:
    """One VDI image's header facts and block map."""

    path: str
    uuid: str
    link: str  # the parent's UUID (a differencing image), else the nil UUID
    image_type: int
    disk_size: int
    block_size: int
    first_block: int  # where block 0's data starts (offset_data + the block's extra bytes)
    stride: int  # block size + extra bytes
    blocks: bytes  # the map: little-endian uint32 per block
    file_id: tuple[int, int]  # (device, inode) of the file these facts were read from

    def entry(self, block: int) -> int:
        if block >= len(self.blocks) // 4:
            return FREE
        value: int = struct.unpack_from("<I", self.blocks, block * 4)[0]
        return value


def read_layer(path: str) -> Layer | None:
    """The header and map of the VDI 1.1 image at ``path``; None when it is not one."""
    with open(path, "rb") as handle:
        found = os.fstat(handle.fileno())
        head = handle.read(0x200)
        if len(head) < HEADER_AT + MIN_HEADER:
            return None
        signature, version, header_size, image_type = struct.unpack_from("<IIII", head, 0x40)
        if (signature, version) != (SIGNATURE, VERSION_1_1) or header_size < MIN_HEADER:
            return None
        offset_map, offset_data = struct.unpack_from("<II", head, 0x154)
        sector_size = struct.unpack_from("<I", head, 0x168)[0]
        disk_size, block_size, extra, count = struct.unpack_from("<QIII", head, 0x170)
        ids = [str(uuid.UUID(bytes_le=head[at:at + 16])) for at in (0x188, 0x1A8)]
        if (image_type not in (TYPE_DYNAMIC, TYPE_STATIC, TYPE_DIFF) or sector_size != 512
                or not block_size or count * 4 > MAX_MAP or count * block_size < disk_size):
            return None
        handle.seek(offset_map)
        blocks = handle.read(count * 4)
        if len(blocks) != count * 4:
            return None
    return Layer(path=path, uuid=ids[0], link=ids[1], image_type=image_type, disk_size=disk_size,
                 block_size=block_size, first_block=offset_data + extra,
                 stride=block_size + extra, blocks=blocks, file_id=(found.st_dev, found.st_ino))


def media_chain(medium: Medium, by_uuid: dict[str, Medium]) -> list[Medium] | None:
    """``medium`` and its parents up to the base, from VirtualBox's record; None when one is
    unknown, not VDI, encrypted, shareable or not created (then it is not read here)."""
    chain: list[Medium] = []
    current: Medium | None = medium
    while current is not None:
        if (current.format != "VDI" or current.encryption != "disabled"
                or current.state != "created" or not current.kind.startswith("normal")
                or len(chain) > len(by_uuid)):
            return None
        chain.append(current)
        if current.parent is None:
            return chain
        current = by_uuid.get(current.parent)
    return None


def matching_layers(chain: Sequence[Medium]) -> list[Layer] | None:
    """The headers of ``chain``'s files (top first), when each file here is the image
    VirtualBox records: its UUID, linked to its parent, one block size; else None."""
    layers = []
    for index, medium in enumerate(chain):
        path = medium.location
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            return None
        try:
            layer = read_layer(path)
        except OSError:
            return None
        base = index == len(chain) - 1
        if layer is None or layer.uuid != medium.uuid:
            return None
        if (layer.image_type == TYPE_DIFF) == base:  # a base that is a diff, or the reverse
            return None
        if layer.link != (NIL_UUID if base else chain[index + 1].uuid):
            return None
        layers.append(layer)
    if len({layer.block_size for layer in layers}) != 1:
        return None
    return layers


class ChainReader:
    """The guest's bytes of a chain of layers (top first), read with ``pread``: thread-safe,
    as the NBD server's reads may come from several connections."""

    def __init__(self, layers: Sequence[Layer], fds: Sequence[int]) -> None:
        self.layers, self.fds = list(layers), list(fds)
        self.size = layers[0].disk_size
        self.block_size = layers[0].block_size

    def _owner(self, block: int) -> tuple[Layer, int, int] | None:
        """The layer holding ``block``'s data, its file, and its entry; None for zeros."""
        for layer, fd in zip(self.layers, self.fds, strict=True):
            entry = layer.entry(block)
            if entry == FREE:
                continue  # the parent's (past the base: zeros)
            return None if entry == ZERO else (layer, fd, entry)
        return None

    def status(self, offset: int, length: int) -> list[tuple[int, bool]]:
        """Runs of ``(length, zero)`` from ``offset`` over ``length`` bytes (the NBD
        export's block status): a block no layer holds data for reads as zeros, so a
        consumer that asks (an import through the raw view) skips it unread."""
        runs: list[tuple[int, bool]] = []
        pos, end = offset, min(offset + length, self.size)
        while pos < end:
            block, within = divmod(pos, self.block_size)
            step = min(self.block_size - within, end - pos)
            zero = self._owner(block) is None
            if runs and runs[-1][1] == zero:
                runs[-1] = (runs[-1][0] + step, zero)
            else:
                runs.append((step, zero))
            pos += step
        return runs

    def read_at(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        pos, end = offset, min(offset + length, self.size)
        while pos < end:
            block, within = divmod(pos, self.block_size)
            step = min(self.block_size - within, end - pos)
            owner = self._owner(block)
            if owner is not None:
                layer, fd, entry = owner
                data = os.pread(fd, step, layer.first_block + entry * layer.stride + within)
                if len(data) != step:
                    raise TaskFailed(f"{layer.path}: block {block} lies past the file's end")
                out[pos - offset:pos - offset + step] = data
            pos += step
        return bytes(out)


@contextlib.contextmanager
def opened(layers: Sequence[Layer]) -> Iterator[ChainReader]:
    with contextlib.ExitStack() as stack:
        fds = []
        for layer in layers:
            fd = os.open(layer.path, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            found = os.fstat(fd)
            if (found.st_dev, found.st_ino) != layer.file_id:  # replaced since it was checked
                raise TaskFailed(f"{layer.path} changed while the chain was being opened")
            fds.append(fd)
        yield ChainReader(layers, fds)
