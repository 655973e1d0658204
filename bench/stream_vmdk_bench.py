"""How fast a disk becomes a streamOptimized VMDK stream, and how many bytes it sends.

Standalone (no pytest): ``.venv/bin/python bench/stream_vmdk_bench.py [--mib N]``.

Two cases, each read to the end in 64 KiB reads (what an HTTP body is read in),
the bytes thrown away so only the encoder is timed:

1. a raw file of N MiB of random data, all of it data (the encoder's own speed,
   the source in the page cache);
2. a qcow2 of 2N MiB, half random and half never written, mapped with
   ``image_maps.data_extents`` and read through the FUSE raw view of
   :mod:`anyvirt.kit.raw_view` (the vSphere import path: no raw copy on disk).

Printed: MiB of disk per second, and bytes on the wire over bytes allocated.
Target: well above 500 MiB/s for case 1, and at most 1.05x the allocated bytes.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from anyvirt.kit import image_maps, qemu_img, raw_view
from anyvirt.kit.stream_vmdk import GRAIN_SIZE, StreamOptimizedEncoder

MIB = 1024 * 1024


def drain(encoder: StreamOptimizedEncoder) -> tuple[int, float]:
    started = time.perf_counter()
    sent = 0
    while chunk := encoder.read(65536):
        sent += len(chunk)
    assert sent == encoder.length, (sent, encoder.length)
    return sent, time.perf_counter() - started


def random_file(path: Path, mib: int) -> None:
    with path.open("wb") as handle:
        for _ in range(mib):
            handle.write(os.urandom(MIB))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=512, help="MiB of random data (default 512)")
    mib = parser.parse_args().mib
    with tempfile.TemporaryDirectory(prefix="anyvirt-bench-") as tmp:
        raw = Path(tmp) / "random.raw"
        random_file(raw, mib)
        size = mib * MIB
        drain(StreamOptimizedEncoder(raw, size, [(0, size)]))  # warm the page cache
        sent, seconds = drain(StreamOptimizedEncoder(raw, size, [(0, size)]))
        print(f"raw, {mib} MiB all data: {mib / seconds:.0f} MiB/s, "
              f"{sent / size:.4f}x the data on the wire")

        image = Path(tmp) / "half.qcow2"
        seed = Path(tmp) / "half.raw"
        os.truncate(raw, 2 * size)
        os.replace(raw, seed)
        qemu_img.convert(seed, image, source_format="raw", format="qcow2")
        seed.unlink()
        started = time.perf_counter()
        extents = image_maps.data_extents(image, "qcow2", granularity=GRAIN_SIZE)
        mapped = time.perf_counter() - started
        allocated = sum(length for _, length in extents)
        if not raw_view.available():
            print("no qemu-storage-daemon or /dev/fuse: case 2 skipped")
            return
        with raw_view.raw_view(image, "qcow2", 2 * size) as view:
            sent, seconds = drain(StreamOptimizedEncoder(view, 2 * size, extents))
        print(f"qcow2 through the FUSE raw view, {2 * mib} MiB half random: map {mapped:.2f} s, "
              f"stream {mib / seconds:.0f} MiB/s of data ({2 * mib / seconds:.0f} MiB/s of disk), "
              f"{sent / allocated:.4f}x the allocated bytes on the wire")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
