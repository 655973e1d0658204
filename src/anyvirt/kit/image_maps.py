"""Where an image holds its data, as ``qemu-img map`` says (run by :mod:`anyvirt.kit.qemu_img`).

Two readings of one map, both parsed line by line as qemu-img prints it, never held whole,
and both checked as data (ranges in order, well formed, lines of bounded length):

- :func:`data_map` / :func:`data_extents`: the guest ranges holding data, widened to a
  granularity and merged (what a backup reads, what a VMDK encoder sends as grains), and
  where each sits in the image file itself when it can be read there directly;
- :func:`map_ranges`: every range of an image QEMU opens from a block-options spec the
  caller built (a layer of a chain served over NBD), kept whole, for a caller composing a
  chain's layers (:mod:`anyvirt.kit.mapped_sources`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from attrs import frozen

from anyvirt.errors import InvalidSpec
from anyvirt.kit.qemu_img import MAP_TIMEOUT, check_format, path_arg, run
from anyvirt.tasks import Job

_MAP_LINE_MAX = 4096  # one range of a map is a short line; anything longer is not a map


@frozen
class DataMap:
    """What ``qemu-img map`` says of an image. ``extents``: the guest byte ranges holding
    data, ``(offset, length)``, widened to the granularity asked for. ``layout``: the
    same data unwidened as ``(guest offset, length, file offset)`` pieces in guest order,
    where it sits in the image file itself (an uncompressed qcow2, a raw file: readable
    there directly, no decoder needed), or None when some of it has no such place
    (compressed clusters)."""

    extents: list[tuple[int, int]]
    layout: list[tuple[int, int, int]] | None


def data_extents(
    path: str | os.PathLike[str],
    format: str,
    *,
    granularity: int = 1,
    force_share: bool = False,
    timeout: float = MAP_TIMEOUT,
    job: Job | None = None,
) -> list[tuple[int, int]]:
    """The ``extents`` of :func:`data_map`."""
    return data_map(path, format, granularity=granularity, force_share=force_share,
                    timeout=timeout, job=job).extents


def data_map(
    path: str | os.PathLike[str],
    format: str,
    *,
    granularity: int = 1,
    force_share: bool = False,
    timeout: float = MAP_TIMEOUT,
    job: Job | None = None,
) -> DataMap:
    """Where an image holds data: ``extents``, the ``(offset, length)`` byte ranges, merged
    and in order.

    From ``qemu-img map``: a range counts when qemu-img says ``data`` and not
    ``zero`` (a hole, a zero cluster and an unallocated one read as zeros and are
    left out). Each range is widened to whole ``granularity`` blocks before
    merging (a caller that sends 64 KiB grains passes 65536), so the list stays
    short even for an image fragmented into small clusters. The map is read line
    by line as qemu-img prints it, never held whole. ``force_share`` (``-U``)
    reads an image a running VM holds. The map's ``layout`` says where that data
    sits in the image file itself (see :class:`DataMap`).
    """
    if granularity < 1:
        raise InvalidSpec(f"granularity must be a positive number of bytes, not {granularity}")
    args = ["map", "--output=json", "-f", check_format(format)]
    if force_share:
        args.append("-U")
    target = path_arg(path)
    what = f"mapping image {target}"
    reader = _MapReader(what, granularity)
    run([*args, "--", target], what=what, timeout=timeout, job=job, error=InvalidSpec,
        on_output=reader.feed)
    extents = reader.finish()
    return DataMap(extents=extents, layout=reader.layout)


class _MapReader:
    """``qemu-img map --output=json`` parsed as it streams: one JSON object a line."""

    def __init__(self, what: str, granularity: int) -> None:
        self.what = what
        self.granularity = granularity
        self.extents: list[tuple[int, int]] = []
        # where each data range sits in the image file itself, (guest, length, file
        # offset); None once a range has none (compressed, or in another file)
        self.layout: list[tuple[int, int, int]] | None = []
        self._partial = b""
        self._end = 0  # where the last range seen ended: ranges come in order

    def feed(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > _MAP_LINE_MAX:
            raise InvalidSpec(f"{self.what}: qemu-img printed a map line of over "
                              f"{_MAP_LINE_MAX} bytes")
        for line in lines:
            self._line(line)

    def finish(self) -> list[tuple[int, int]]:
        self._line(self._partial)
        self._partial = b""
        if self.extents:  # widened past the image's end (the map's last range ends there)
            first, length = self.extents[-1]
            self.extents[-1] = (first, min(first + length, self._end) - first)
        return self.extents

    def _line(self, line: bytes) -> None:
        text = line.strip().lstrip(b"[").rstrip(b",]").strip()
        if not text:
            return
        try:
            entry = json.loads(text)
            start, length = entry["start"], entry["length"]
            data, zero = entry["data"], entry["zero"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise InvalidSpec(f"{self.what}: qemu-img printed a map line that is not a "
                              f"range: {text[:80]!r}") from exc
        if not (isinstance(start, int) and isinstance(length, int) and start >= self._end
                and length >= 0 and isinstance(data, bool) and isinstance(zero, bool)):
            raise InvalidSpec(f"{self.what}: qemu-img printed a range out of order or "
                              f"malformed: {text[:80]!r}")
        self._end = start + length
        self._seen(entry, start, length)
        if not data or zero or length == 0:
            return
        self._place(entry, start, length)
        step = self.granularity
        first, end = start // step * step, -(-(start + length) // step) * step
        if self.extents and first <= self.extents[-1][0] + self.extents[-1][1]:
            first = self.extents[-1][0]
            self.extents[-1] = (first, max(end, first + self.extents[-1][1]) - first)
        else:
            self.extents.append((first, end - first))


    def _seen(self, entry: dict[str, Any], start: int, length: int) -> None:
        """Every well-formed range, as it comes (for readers that keep more)."""

    def _place(self, entry: dict[str, Any], start: int, length: int) -> None:
        if self.layout is None:
            return
        host = entry.get("offset")
        if not isinstance(host, int) or host < 0 or entry.get("depth", 0) != 0:
            self.layout = None
            return
        if self.layout:
            guest, size, at = self.layout[-1]
            if guest + size == start and at + size == host:  # contiguous both ways
                self.layout[-1] = (guest, size + length, at)
                return
        self.layout.append((start, length, host))


@frozen
class MapRange:
    """One range of ``qemu-img map``: ``present`` (allocated in the image itself, data or
    zeros; None where qemu-img does not say), ``data``, ``zero``, and ``offset``, where
    its bytes sit in the image's file (None where they sit nowhere readable directly:
    compressed, encrypted, not data)."""

    start: int
    length: int
    present: bool | None
    data: bool
    zero: bool
    offset: int | None


def map_ranges(
    spec: Mapping[str, Any],
    *,
    timeout: float = MAP_TIMEOUT,
    job: Job | None = None,
) -> list[MapRange]:
    """Every range of the image ``spec`` describes, in order, as ``qemu-img map`` gives it.

    ``spec`` is the image as QEMU's block options (``driver``, ``file``, ``backing``),
    built by the caller from its trusted record (the format given, never probed; a
    qcow2's backing ``None`` so that nothing its header names is opened), passed as a
    ``json:`` image name: no path in it is parsed as options. Why: a caller that reaches
    an image's file by ranged reads (a remote daemon's volume over NBD) learns where
    each layer of a chain holds its own data, and reads it there."""
    what = "mapping an image"
    reader = _RangesReader(what)
    run(["map", "--output=json", "--", "json:" + json.dumps(spec)], what=what,
        timeout=timeout, job=job, error=InvalidSpec, on_output=reader.feed)
    reader.finish()
    return reader.ranges


class _RangesReader(_MapReader):
    """``qemu-img map`` with every range kept (:class:`MapRange`)."""

    def __init__(self, what: str) -> None:
        super().__init__(what, 1)
        self.ranges: list[MapRange] = []

    def _seen(self, entry: dict[str, Any], start: int, length: int) -> None:
        offset, present = entry.get("offset"), entry.get("present")
        if not isinstance(present, bool):
            present = None  # a qemu-img before 6.0 does not say
        self.ranges.append(MapRange(
            start, length, present, entry["data"], entry["zero"],
            offset if isinstance(offset, int) and offset >= 0 else None))


__all__ = ["DataMap", "MapRange", "data_extents", "data_map", "map_ranges"]
