"""Backup repository figures beside the by-hand pipeline, on a real libvirtd.

A VM with a 1 GiB disk holding 512 MiB of data (half random, half base64 text:
some of it compresses) is backed up into a fresh local repository, and the same
disk is piped by hand through ``qemu-img convert -O raw ... | zstd``. Then 8 MiB
change (one contiguous write; eight 1 MiB writes in eight chunks; sixty-four
128 KiB writes, the case 1 MiB chunks pay for) and each incremental backup reports
what it read (share of the disk) and stored (against the change compressed by
zstd -3, what the by-hand pipeline would store for it). Last, ten nightly backups
of 8 MiB changed each (eight 1 MiB writes at random places) give the repository's
growth against the first backup plus the ten changes. Random bytes are written:
they do not compress, so the change compressed is the change. Timings are printed,
never asserted.

    .venv/bin/python bench/repository_bench.py [--size-mib 1024] [--data-mib 512] [--chunk-kib 1024]
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import zstandard
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon

import anyvirt
from anyvirt import BackupRepository, DiskSpec, VMSpec
from anyvirt.repository.repo import CHUNK_SIZE

MIB = 1024 * 1024


def make_image(path: Path, size_mib: int, data_mib: int) -> None:
    """``data_mib`` of data in 8 MiB extents spread evenly over the disk."""
    extents = data_mib // 8
    stride = size_mib // extents * MIB
    with open(path, "wb") as handle:
        handle.truncate(size_mib * MIB)
        for n in range(extents):
            handle.seek(n * stride)
            if n % 2:
                handle.write(base64.b64encode(os.urandom(6 * MIB))[:8 * MIB])
            else:
                handle.write(os.urandom(8 * MIB))


def cpu(who: int) -> float:
    """CPU seconds (user + system) used so far: steadier than wall time on a busy machine."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def by_hand(disk: str, fmt: str, work: Path) -> tuple[float, float, int]:
    """qemu-img cannot convert into a pipe ("Could not resize file"), so by hand it is
    two stages: a sparse raw file, then zstd over it (holes read as zeros). Returns both
    stages' seconds and the compressed size."""
    raw, out = work / "hand.raw", work / "hand.raw.zst"
    started = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", disk, str(raw)], check=True)
    converted = time.monotonic()
    subprocess.run(["zstd", "-q", "-3", "-f", str(raw), "-o", str(out)], check=True)
    done = time.monotonic()
    size = out.stat().st_size
    raw.unlink()
    out.unlink()
    return converted - started, done - converted, size


def qemu_io(disk: str, fmt: str, writes: list[tuple[int, int]], work: Path) -> int:
    """Random bytes written through the image format, as a guest would (the VM is stopped);
    returns the written bytes' size compressed by zstd -3 (what storing the change costs)."""
    cmds, packed = [], 0
    for n, (offset, length) in enumerate(writes):
        source = work / f"change-{n}"
        data = os.urandom(length)
        source.write_bytes(data)
        packed += len(zstandard.ZstdCompressor(level=3).compress(data))
        cmds += ["-c", f"write -s {source} {offset} {length}"]
    subprocess.run(["qemu-io", "-f", fmt, *cmds, disk], check=True, capture_output=True)
    return packed


def repo_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--chunk-kib", type=int, default=CHUNK_SIZE // 1024,
                        help="the repositories' chunk size (the default: anyvirt's)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="anyvirt-repo-bench-"))
    daemon = LibvirtDaemon(name="repobench").start()
    try:
        image = work / "data.raw"
        make_image(image, args.size_mib, args.data_mib)
        with anyvirt.connect(daemon.anyvirt_uri) as host:
            vm = host.vms.create(VMSpec(name="bench", cpus=1, memory_mib=64,
                                        disks=[DiskSpec(image=str(image))]))
            disk = vm.info().disks[0]
            assert disk.path is not None
            fmt = disk.format or "qcow2"
            image.unlink()
            cpu_before = cpu(resource.RUSAGE_CHILDREN)
            convert, compress, hand_bytes = by_hand(disk.path, fmt, work)
            hand = convert + compress
            hand_cpu = cpu(resource.RUSAGE_CHILDREN) - cpu_before
            repo = BackupRepository(work / "repo", chunk_size=args.chunk_kib * 1024)
            cpu_before = cpu(resource.RUSAGE_SELF)
            started = time.monotonic()
            first = repo.backup(vm)
            took = time.monotonic() - started
            backup_cpu = cpu(resource.RUSAGE_SELF) - cpu_before
            print(f"disk {args.size_mib} MiB ({fmt}), {args.data_mib} MiB of data, "
                  f"{args.chunk_kib} KiB chunks")
            print(f"by hand  qemu-img convert -O raw {convert:.2f} s + zstd -3 {compress:.2f} s = "
                  f"{hand:.2f} s ({hand_cpu:.2f} s CPU), {hand_bytes / MIB:.1f} MiB")
            print(f"anyvirt  full backup:                       {took:.2f} s ({backup_cpu:.2f} s CPU), read "
                  f"{first.read_bytes / MIB:.1f} MiB, stored {first.stored_bytes / MIB:.1f} MiB"
                  f"  -> {took / hand:.2f}x the by-hand time")
            size = args.size_mib * MIB
            for label, writes in [
                ("one 8 MiB write", [(100 * MIB, 8 * MIB)]),
                ("eight 1 MiB writes in 8 chunks", [(n * 64 * MIB + MIB, MIB) for n in range(8)]),
                ("64 writes of 128 KiB, scattered", [(n * (size // 64) + 3 * 128 * 1024, 128 * 1024)
                                                     for n in range(64)]),
            ]:
                packed = qemu_io(disk.path, fmt, writes, work)
                started = time.monotonic()
                point = repo.backup(vm)
                took = time.monotonic() - started
                share = 100 * point.read_bytes / size
                print(f"anyvirt  incremental after {label}: {took:.2f} s, read "
                      f"{point.read_bytes / MIB:.1f} MiB ({share:.1f}% of the disk), stored "
                      f"{point.stored_bytes / MIB:.2f} MiB = {point.stored_bytes / packed:.2f}x "
                      f"the change compressed ({packed / MIB:.2f} MiB)")
            nightly(vm, disk.path, fmt, size, work, args.chunk_kib * 1024)
            started = time.monotonic()
            report = repo.verify()
            print(f"verify: ok={report.ok}, {report.chunks} chunks, {time.monotonic() - started:.2f} s")
            vm.delete(disks=True)
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


def nightly(vm: anyvirt.VM, path: str, fmt: str, size: int, work: Path, chunk: int) -> None:
    """A fresh repository: one full backup, then ten nights of 8 MiB changed (eight 1 MiB
    writes at random 1 MiB-aligned places), each followed by a backup."""
    root = work / "nightly"
    repo = BackupRepository(root, chunk_size=chunk)
    first = repo.backup(vm)
    base = repo_bytes(root)
    changes = reads = 0
    started = time.monotonic()
    rng = random.Random(20)
    for _night in range(10):
        writes = [(at * MIB, MIB) for at in rng.sample(range(size // MIB), 8)]
        changes += qemu_io(path, fmt, writes, work)
        reads += repo.backup(vm).read_bytes
    took = time.monotonic() - started
    grown = repo_bytes(root)
    print(f"ten nightly backups of 8 MiB changed: {took:.2f} s, read {reads / MIB:.1f} MiB "
          f"in all; repository {grown / MIB:.1f} MiB = {grown / (base + changes):.3f}x "
          f"(first {base / MIB:.1f} MiB + changes {changes / MIB:.1f} MiB); first backup "
          f"read {first.read_bytes / MIB:.1f} MiB")


if __name__ == "__main__":
    main()
