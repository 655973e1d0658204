"""Backup repository: deduplication over linked clones, and restore beside the by-hand
pipeline, on a real libvirtd.

Deduplication. A template VM (a disk of ``--size-mib`` holding ``--data-mib`` of data:
half random, half base64 text) gets ``--clones`` linked clones; each clone then
writes ``--change-mib`` of its own random data (4 MiB-aligned, at a different place
in each clone). Every clone is backed up into one fresh repository. The goal: the
repository holds at most 1.2x (the template's data compressed by hand with
``zstd -3``, plus every clone's own changes compressed the same way).

Restore. The template's restore point is restored onto the same daemon, and so is
the by-hand pipeline's archive of the same disk (``qemu-img convert -O raw`` then
``zstd -3``, restored as ``zstd -d`` into a raw file, then the same
``host.vms.create`` with that image). Rounds alternate which goes first. The
goal: at most 1.1x the by-hand time. Timings are printed, never asserted.

Each timed restore ends with a ``sync`` (``--no-sync`` leaves it out), so each side pays
for writing its own bytes to the disk and not for the writeback of the run before it.
Without it the rounds alternate fast and slow: whichever restore follows another of the
same kind met that one's dirty pages (measured on an idle machine: pairwise 0.30x, 2.08x,
0.35x, 1.99x, ...).

    .venv/bin/python bench/repository_dedup_restore_bench.py [--size-mib 1024]
        [--data-mib 512] [--clones 10] [--change-mib 8] [--rounds 2] [--no-sync]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anyvirt_libvirt.testbed.daemon import LibvirtDaemon

import anyvirt
from anyvirt import BackupRepository, DiskSpec, Overcommit, VMSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repository_bench import MIB, make_image, qemu_io


def zstd_size(path: Path) -> int:
    """Bytes of ``path`` compressed as by hand (``zstd -3``; holes read as zeros)."""
    out = path.with_name(path.name + ".zst")
    subprocess.run(["zstd", "-q", "-3", "-f", str(path), "-o", str(out)], check=True)
    size = out.stat().st_size
    out.unlink()
    return size


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def by_hand_archive(disk: str, fmt: str, work: Path) -> tuple[Path, int]:
    """The by-hand backup of the disk: raw, then zstd -3. Returns the file and the
    template's compressed size."""
    raw, out = work / "hand.raw", work / "hand.raw.zst"
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", disk, str(raw)], check=True)
    subprocess.run(["zstd", "-q", "-3", "-f", str(raw), "-o", str(out)], check=True)
    raw.unlink()
    return out, out.stat().st_size


def cpu() -> float:
    """CPU seconds of this process and its children (zstd, the import's qemu-img): steadier
    than wall time on a busy machine. The daemon's own share (the upload) is not counted,
    and is the same for both."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def restore_by_hand(host: anyvirt.Host, archive: Path, name: str, work: Path,
                    sync: bool) -> tuple[float, float]:
    started, used = time.monotonic(), cpu()
    raw = work / f"{name}.raw"
    subprocess.run(["zstd", "-q", "-d", "-f", "--sparse", str(archive), "-o", str(raw)], check=True)
    host.vms.create(VMSpec(name=name, cpus=1, memory_mib=64, disks=[DiskSpec(image=str(raw))]))
    if sync:
        os.sync()
    took = time.monotonic() - started, cpu() - used
    raw.unlink()
    return took


def restore_by_anyvirt(host: anyvirt.Host, repo: BackupRepository, point: str,
                       name: str, sync: bool) -> tuple[float, float]:
    started, used = time.monotonic(), cpu()
    repo.restore(point, to=host, name=name)
    if sync:
        os.sync()
    return time.monotonic() - started, cpu() - used


def dedup(host: anyvirt.Host, template: anyvirt.VM, args: argparse.Namespace, work: Path,
          template_zstd: int) -> None:
    clones = [template.clone(f"clone{n}", linked=True) for n in range(args.clones)]
    change = args.change_mib * MIB
    own = 0
    for n, clone in enumerate(clones):
        disk = clone.info().disks[0]
        assert disk.path is not None and disk.backing, "a linked clone has a backing image"
        # each clone's own data at its own 4 MiB-aligned place, after the template's
        offset = (args.size_mib // 2 + n * args.change_mib) * MIB % (args.size_mib * MIB - change)
        offset -= offset % (4 * MIB)
        qemu_io(disk.path, disk.format or "qcow2", [(offset, change)], work)
        own += zstd_size(work / "change-0")
    repo = BackupRepository(work / "dedup-repo")
    started = time.monotonic()
    points = [repo.backup(clone) for clone in clones]
    took = time.monotonic() - started
    stored = tree_bytes(work / "dedup-repo")
    goal = template_zstd + own
    print(f"dedup    {args.clones} linked clones of one template, {args.change_mib} MiB of "
          f"their own each: backed up in {took:.1f} s, read "
          f"{sum(p.read_bytes for p in points) / MIB:.0f} MiB")
    print(f"         repository {stored / MIB:.1f} MiB; template by hand (zstd -3) "
          f"{template_zstd / MIB:.1f} MiB + own changes (zstd -3) {own / MIB:.1f} MiB = "
          f"{goal / MIB:.1f} MiB  -> {stored / goal:.2f}x (goal <= 1.2x)")
    print(f"         per clone stored: {', '.join(f'{p.stored_bytes / MIB:.1f}' for p in points)} MiB")
    for clone in clones:
        clone.delete(disks=True)


def restore(host: anyvirt.Host, template: anyvirt.VM, args: argparse.Namespace, work: Path,
            archive: Path) -> None:
    repo = BackupRepository(work / "restore-repo")
    point = repo.backup(template)
    hand, ours = [], []
    for n in range(args.rounds):
        order = ["hand", "anyvirt"] if n % 2 == 0 else ["anyvirt", "hand"]
        for who in order:
            name = f"r-{who}-{n}"
            if who == "hand":
                hand.append(restore_by_hand(host, archive, name, work, args.sync))
            else:
                ours.append(restore_by_anyvirt(host, repo, point.id, name, args.sync))
            host.vms.get(name).delete(disks=True)
    pairs = ", ".join(f"{a[0] / b[0]:.2f}x" for a, b in zip(ours, hand, strict=True))
    print(f"restore  {args.size_mib} MiB disk, {args.data_mib} MiB of data, onto the same libvirtd, "
          f"{'each ending with a sync' if args.sync else 'no sync'}")
    for label, runs in (("by hand (zstd -d --sparse, then create with the image)", hand),
                        ("anyvirt repo.restore                                 ", ours)):
        print(f"         {label}: {', '.join(f'{w:.2f}' for w, _ in runs)} s wall, "
              f"{', '.join(f'{c:.2f}' for _, c in runs)} s CPU")
    wall = statistics.median(w for w, _ in ours) / statistics.median(w for w, _ in hand)
    spent = statistics.median(c for _, c in ours) / statistics.median(c for _, c in hand)
    print(f"         wall pairwise {pairs}; medians {wall:.2f}x wall, {spent:.2f}x CPU "
          f"(goal <= 1.1x); load average {os.getloadavg()[0]:.1f} at the end")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--clones", type=int, default=10)
    parser.add_argument("--change-mib", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", choices=["dedup", "restore"], default=None)
    parser.add_argument("--sync", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="anyvirt-dedup-bench-"))
    daemon = LibvirtDaemon(name="dedupbench").start()
    try:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        image = work / "data.raw"
        make_image(image, args.size_mib, args.data_mib)
        # eleven VMs of one vCPU each on two CPUs: past the default overcommit of 4
        with anyvirt.connect(daemon.anyvirt_uri, overcommit=Overcommit(cpu=16.0)) as host:
            template = host.vms.create(VMSpec(name="template", cpus=1, memory_mib=64,
                                              disks=[DiskSpec(image=str(image))]))
            image.unlink()
            disk = template.info().disks[0]
            assert disk.path is not None
            archive, template_zstd = by_hand_archive(disk.path, disk.format or "qcow2", work)
            if args.skip != "restore":
                restore(host, template, args, work, archive)
            if args.skip != "dedup":
                dedup(host, template, args, work, template_zstd)
            template.delete(disks=True)
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
