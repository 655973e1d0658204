"""Benchmark: a move from Proxmox (disk bytes over SSH from the node) to memory://, streamed
against copied.

The API side is fakepve in this process; the node's side is the tests' **stand-in**: a
real OpenSSH server on loopback (``tests/sshd_support.py``) serving a directory that a
fakepve directory storage names as its path. A VM's 256 MiB raw volume (``--size-mib``)
gets 128 MiB of random data (``--data-mib``) where PVE says it lives, and is moved by one
verified ``anyvirt.migrate(vm, to=memory://...)``:

* ``streamed``: this branch (each volume an NBD export read in windows over SSH, a raw
  view the import reads);
* ``copied``: the same code with the driver's ``stream_disks`` switched off, which is
  main's path (``export_disks``: the whole volume copied into the temp dir first).

For each: the copy's time (export and import, until the verification starts), the whole
move, and the largest regular file the temp dir held while the source was read. memory://
has no ranged reads, so its read-back exports its copy whole either way (not counted as
staging: it is the target's). Streamed, the bytes asked of the node over SSH in each
phase too (every window of ranged reads opened there, counted where it is opened); the
copied path reads the whole volume once, before the import. Figures are printed, never
asserted.

    .venv/bin/python bench/pve_stream_bench.py [--size-mib 256] [--data-mib 128] [--runs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import stat
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "backends" / "proxmox" / "tests"))
from anyvirt_proxmox import node_streams  # noqa: E402
from anyvirt_proxmox.testbed import make_certificate  # noqa: E402
from pve_support import PASSWORD, InProcessFakePve  # type: ignore[import-not-found]  # noqa: E402
from sshd_support import sshd  # type: ignore[import-not-found]  # noqa: E402

import anyvirt  # noqa: E402
from anyvirt import DiskSpec, NicSpec, VMSpec  # noqa: E402

MIB = 1024 * 1024
#: the phase of the streamed move under way, and the bytes of the node over SSH in each:
#: asked for (the windows' spans) and delivered (what the reader took of them)
phase = ["copy"]
node_bytes = {"copy": 0, "verify": 0, "copy got": 0, "verify got": 0}


class Counted:
    """A window whose delivered bytes are counted."""

    def __init__(self, window: Any) -> None:
        self.window = window

    def read(self, size: int, /) -> bytes:
        data: bytes = self.window.read(size)
        node_bytes[f"{phase[0]} got"] += len(data)
        return data

    def finish(self) -> None:
        self.window.finish()

    def abort(self) -> None:
        self.window.abort()


def count_node_reads() -> None:
    """Every window of ranged reads the streamed path opens on the node, counted by phase."""
    for reach in (node_streams._OverOpenSsh, node_streams._OverSftp):
        def opened(self: Any, path: str, offset: int, length: int, what: str,
                   window: Any = reach.window) -> Any:
            node_bytes[phase[0]] += length
            return Counted(window(self, path, offset, length, what))
        reach.window = opened  # type: ignore[method-assign]


def largest_file(where: Path) -> int:
    mounts = {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()}
    largest = 0
    for root, _dirs, files in os.walk(where):
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(FileNotFoundError):
                found = os.lstat(path)
                if path not in mounts and stat.S_ISREG(found.st_mode):
                    largest = max(largest, found.st_blocks * 512, found.st_size)
    return largest


def one_move(uri: str, size_mib: int, data_mib: int, streamed: bool) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="pve-bench-"))
    tempfile.tempdir = str(scratch)
    seen: dict[str, float] = {"largest": 0}
    try:
        with anyvirt.connect(uri, password=PASSWORD) as pve:
            if not streamed:  # main's path: the whole volume copied into the temp dir first
                pve.driver.stream_disks = lambda vm_id, job: contextlib.nullcontext(None)  # type: ignore[method-assign]
            name = f"bench-{uuid.uuid4().hex[:6]}"
            vm = pve.vms.create(VMSpec(name=name, cpus=1, memory_mib=128, node="pve1",
                                       disks=[DiskSpec(size_gib=size_mib / 1024, storage="nodestore")],
                                       nics=[NicSpec()]))
            try:
                volid = vm.info().disks[0].path or ""
                found = pve.native.nodes("pve1").storage("nodestore").content(quote(volid, safe="")).get()
                where = Path(found["path"])
                where.parent.mkdir(parents=True, exist_ok=True)
                with where.open("wb") as out:
                    for _ in range(data_mib):
                        out.write(os.urandom(MIB))
                    out.truncate(size_mib * MIB)
                os.sync()

                phase[0] = "copy"
                node_bytes.update(dict.fromkeys(node_bytes, 0))

                def watch(task: anyvirt.Task[Any]) -> None:
                    if "verifying" in (task.message or ""):
                        seen.setdefault("copy", time.perf_counter())
                        phase[0] = "verify"
                    if "copy" not in seen:
                        seen["largest"] = max(seen["largest"], largest_file(scratch))

                with anyvirt.connect(f"memory://bench-{uuid.uuid4().hex[:6]}") as target:
                    start = time.perf_counter()
                    anyvirt.migrate(vm, to=target, networks={"vmbr0": "default"}, on_progress=watch)
                    end = time.perf_counter()
            finally:
                vm.delete()
        return {"copy_s": seen["copy"] - start, "whole_s": end - start,
                "largest_staged_mib": seen["largest"] / MIB,
                "node_mib": {key: value / MIB for key, value in node_bytes.items()}}
    finally:
        tempfile.tempdir = None
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--data-mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    count_node_reads()
    work = Path(tempfile.mkdtemp(prefix="pve-bench-node-"))
    cert = make_certificate(work)
    fake = InProcessFakePve(*cert)
    try:
        with sshd(work / "ssh") as node:
            root = node.served / "nodestore"
            root.mkdir()
            fake.pve.storages["nodestore"] = {"type": "dir", "active": 1, "content": "images",
                                              "files": set(), "path": str(root),
                                              "avail": 50 * 1024 ** 3}
            uri = (f"{fake.uri}&ssh=root%40127.0.0.1:{node.port}&ssh_key={quote(str(node.key))}"
                   f"&ssh_known_hosts={quote(str(node.known_hosts))}")
            print(f"load {os.getloadavg()[0]:.1f}; {args.size_mib} MiB volume, "
                  f"{args.data_mib} MiB of data, raw")
            for run in range(args.runs):
                for streamed in (False, True):  # alternating: the load drifts
                    result = one_move(uri, args.size_mib, args.data_mib, streamed)
                    label = "streamed" if streamed else "copied  "
                    mib = result["node_mib"]
                    wire = ("; of the node over SSH, copy / verification: asked "
                            f"{mib['copy']:.0f} / {mib['verify']:.0f} MiB, delivered "
                            f"{mib['copy got']:.1f} / {mib['verify got']:.1f} MiB "
                            f"({mib['copy got'] / args.data_mib:.3f}x / "
                            f"{mib['verify got'] / args.data_mib:.3f}x the data)"
                            ) if streamed else ""
                    print(f"run {run + 1} {label}: copy {result['copy_s']:.2f} s, whole "
                          f"{result['whole_s']:.2f} s, largest staged file "
                          f"{result['largest_staged_mib']:.1f} MiB{wire} "
                          f"(load {os.getloadavg()[0]:.1f})")
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)  # the stand-in node's volumes with it


if __name__ == "__main__":
    main()
