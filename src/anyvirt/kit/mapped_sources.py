"""A raw view's guest data read where it sits, past the decoder that serves the view.

A disk streamed from afar (a remote daemon's qcow2 chain) is served as a raw view
(:mod:`anyvirt.kit.raw_view`): ``qemu-storage-daemon`` decodes it from NBD exports
that read the remote files. Every byte of data then crosses this machine three more
times (the NBD relay to the daemon, the daemon to FUSE, FUSE to the reader), which
on a machine whose cores the whole pipeline shares costs as much as the copy itself.
Where a chain's data sits in its files as it is (uncompressed, unencrypted clusters),
its layers' maps (:func:`chain_pieces`) say where, and a reader of the
view may read those places straight from the layers' own ``read_at``: the view is
still there for everything else (its map, its size, the formats nothing here reads).

The backend that serves a view registers its :class:`MappedSource` by the view's path
while the view lasts (:func:`registered`); the kit's readers of raw views
(:class:`anyvirt.kit.stream_vmdk.StreamOptimizedEncoder`) ask :func:`source_for`.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

from attrs import frozen

from anyvirt.errors import TaskFailed
from anyvirt.kit import image_maps
from anyvirt.kit.view_records import ViewRecord

#: ``(guest offset, length, layer, file offset)`` in guest order, layer 0 the top
Piece = tuple[int, int, int, int]


@frozen
class MappedSource:
    """Guest data of a disk: ``pieces`` of it (see :data:`Piece`) in the files that
    ``layers`` read (``read_at(offset, length) -> bytes``, top layer first); the guest
    bytes outside every piece read as zeros."""

    pieces: Sequence[Piece]
    layers: Sequence[Callable[[int, int], bytes | bytearray | memoryview]]

    def read(self, offset: int, into: memoryview) -> memoryview:
        """The guest bytes ``offset .. offset + len(into)``: as one layer's read gave them
        where one piece holds them all (the usual run of data: no copy), else copied into
        ``into``."""
        index = max(0, bisect.bisect_right(self.pieces, offset, key=lambda p: p[0]) - 1)
        if index < len(self.pieces):
            guest, length, layer, host = self.pieces[index]
            if guest <= offset and offset + len(into) <= guest + length:
                return memoryview(self._read(layer, host + offset - guest, len(into)))
        self.read_into(into, offset)
        return into

    def _read(self, layer: int, at: int, length: int) -> bytes | bytearray | memoryview:
        got = self.layers[layer](at, length)
        if len(got) != length:
            raise TaskFailed(f"layer {layer} gave {len(got)} bytes at {at} where its map "
                             f"puts {length}")
        return got

    def read_into(self, data: memoryview, offset: int) -> None:
        """The guest bytes ``offset .. offset + len(data)`` into ``data``."""
        done = 0
        index = max(0, bisect.bisect_right(self.pieces, offset, key=lambda p: p[0]) - 1)
        end = offset + len(data)
        for guest, length, layer, host in self.pieces[index:]:
            if guest >= end:
                break
            low, high = max(guest, offset), min(guest + length, end)
            if low >= high:
                continue
            data[done:low - offset] = bytes(low - offset - done)
            data[low - offset:high - offset] = self._read(layer, host + low - guest, high - low)
            done = high - offset
        data[done:] = bytes(len(data) - done)


def chain_pieces(layers: Sequence[Sequence[image_maps.MapRange]]) -> list[Piece] | None:
    """The guest data of a chain from each layer's own map (top first, each mapped with no
    backing, :func:`anyvirt.kit.image_maps.map_ranges`): a range belongs to the highest
    layer that has it ``present`` (its data there, or zeros that hide the layers below),
    as QEMU reads a chain. None when some data sits nowhere readable directly, or a map
    does not say what its layer holds."""
    pieces: list[Piece] = []
    open_ranges: list[tuple[int, int]] = [(0, _END)]  # guest ranges no layer above holds
    for depth, ranges in enumerate(layers):
        held: list[tuple[int, int]] = []
        for found in ranges:
            if found.present is None:
                return None  # which layer holds what is not known
            if not found.present or not found.length:
                continue
            for low, high in _overlaps(open_ranges, found.start, found.start + found.length):
                if found.data and not found.zero:
                    if found.offset is None:
                        return None
                    pieces.append((low, high - low, depth, found.offset + low - found.start))
                held.append((low, high))
        open_ranges = _without(open_ranges, held)
    pieces.sort()
    merged: list[Piece] = []
    for guest, length, layer, host in pieces:
        if merged:
            last = merged[-1]
            if last[2] == layer and last[0] + last[1] == guest and last[3] + last[1] == host:
                merged[-1] = (last[0], last[1] + length, layer, last[3])
                continue
        merged.append((guest, length, layer, host))
    return merged


_END = 1 << 63


def _overlaps(ranges: list[tuple[int, int]], start: int, end: int) -> Iterator[tuple[int, int]]:
    """The parts of sorted, disjoint ``(low, high)`` ``ranges`` inside ``start .. end``."""
    index = max(0, bisect.bisect_right(ranges, start, key=lambda r: r[0]) - 1)
    for low, high in ranges[index:]:
        if low >= end:
            return
        if high > start:
            yield max(low, start), min(high, end)


def _without(ranges: list[tuple[int, int]], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint ``ranges`` less the sorted, disjoint parts of them in ``taken``."""
    out: list[tuple[int, int]] = []
    index = 0
    for low, high in ranges:
        at = low
        while index < len(taken) and taken[index][0] < high:
            t_low, t_high = taken[index]
            if t_low > at:
                out.append((at, t_low))
            at = max(at, t_high)
            index += 1
        if at < high:
            out.append((at, high))
    return out


#: the mapped sources of the views their servers registered, while the views last
MAPPED: ViewRecord[MappedSource] = ViewRecord()


@contextlib.contextmanager
def registered(sources: Mapping[str, MappedSource]) -> Iterator[None]:
    """``sources`` by view path while the block lasts."""
    with MAPPED.recorded(sources):
        yield


def source_for(path: str | os.PathLike[str]) -> MappedSource | None:
    """The mapped source of the view at ``path``, if its server registered one."""
    return MAPPED.get(path)


__all__ = ["MAPPED", "MappedSource", "Piece", "chain_pieces", "registered", "source_for"]
