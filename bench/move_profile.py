"""Profile: where the CPU of a streamed move from a remote libvirt daemon to vcsim goes.

Sets up ``bench/move_stream_bench.py``'s remote testbed (a libvirtd whose pool only its own
mount namespace sees, a vcsim), runs verified moves and samples ``/proc`` every
``--every`` seconds while the copy runs (until the verification begins): the CPU seconds of
every process on the machine by command name (libvirtd and its I/O helper,
qemu-storage-daemon, vcsim, ...) and of each thread of this process by its Python name
(the NBD relay, the encoder's readers, the upload). What other sessions burn shows up
too, under their own names. A standalone program: figures are printed, never asserted.

    .venv/bin/python bench/move_profile.py [--size-mib 1024] [--runs 2] [--every 0.1] [--perf FILE]

``--perf FILE``: the last run's copy is also recorded by ``perf record -a`` into FILE
(``perf report -i FILE --sort comm,dso,sym`` shows which code burns the CPU).
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from move_support import MIB, move_testbed, timed_move

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(stat_path: str) -> tuple[str, float] | None:
    """(command name, CPU seconds) from a ``/proc/.../stat`` file, or None if gone."""
    try:
        with open(stat_path, "rb") as handle:
            raw = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    name = raw[raw.index("(") + 1: raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return name, (int(fields[11]) + int(fields[12])) / TICK


class Sampler:
    """CPU per process (by pid, named by command) and per thread of this process (by its
    Python name), sampled until stopped; what a process burnt after its last sample before
    it exited is missed (at most one interval)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.threads_first: dict[int, float] = {}
        self.threads_last: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="profile-sampler", daemon=True)

    def _sample(self) -> None:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                found = _cpu(f"/proc/{entry}/stat")
                if found is not None:
                    self.first.setdefault(int(entry), found)
                    self.last[int(entry)] = found
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid in os.listdir("/proc/self/task"):
            found = _cpu(f"/proc/self/task/{tid}/stat")
            if found is not None:
                name = names.get(int(tid), found[0])
                self.threads_first.setdefault(int(tid), found[1])
                self.threads_last[int(tid)] = (name, found[1])

    def _run(self) -> None:
        while not self.stop.is_set():
            self._sample()
            self.stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._sample()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def by_command(self) -> dict[str, float]:
        out: dict[str, float] = collections.defaultdict(float)
        for pid, (name, cpu) in self.last.items():
            out["(this process)" if pid == os.getpid() else name] += cpu - self.first[pid][1]
        return dict(out)

    def by_thread(self) -> dict[str, float]:
        out: dict[str, float] = collections.defaultdict(float)
        for tid, (name, cpu) in self.threads_last.items():
            # pool threads are numbered: count them by pool
            out[name.rstrip("0123456789_").rstrip("-_")] += cpu - self.threads_first[tid]
        return dict(out)


class CopyEnd:
    """What ``timed_move`` reads as a relay's byte count when the verification begins:
    here it ends the sampling (and the perf recording) instead."""

    def __init__(self, sampler: Sampler, perf: subprocess.Popen[bytes] | None) -> None:
        self.sampler, self.perf, self.done = sampler, perf, False

    @property
    def total(self) -> int:
        self.end()
        return 0

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        self.sampler.__exit__()
        if self.perf is not None:
            self.perf.send_signal(signal.SIGINT)
            self.perf.wait()


def profile_once(bed: Any, every: float, perf_file: str | None, run: int) -> None:
    perf = None
    if perf_file:
        perf = subprocess.Popen(["perf", "record", "-a", "-F", "999", "-o", perf_file],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf is recording
    sampler = Sampler(every)
    end = CopyEnd(sampler, perf)
    load = os.getloadavg()[0]
    sampler.__enter__()
    moved = timed_move(bed.daemon.anyvirt_uri, bed.sim.anyvirt_uri_with_ca, bed.sim.password,
                       bed.vm_name, [end])  # type: ignore[list-item]
    end.end()
    wall = moved["verifying"]
    print(f"== run {run}: copy {wall:.2f} s (whole move {moved['total']:.2f} s), "
          f"load {load:.1f}")
    commands = sorted(sampler.by_command().items(), key=lambda kv: -kv[1])
    print("  processes: " + ", ".join(f"{name} {cpu:.2f}" for name, cpu in commands
                                      if cpu >= 0.02)
          + f"; all {sum(c for _, c in commands):.2f} CPU-s in {wall:.2f} s")
    threads = sorted(sampler.by_thread().items(), key=lambda kv: -kv[1])
    print("  this process: " + ", ".join(f"{name} {cpu:.2f}" for name, cpu in threads
                                         if cpu >= 0.02))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--every", type=float, default=0.1)
    parser.add_argument("--perf", help="record the last run's copy with perf into this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="anyvirt-profile-") as tmp, \
            move_testbed(Path(tmp), args.size_mib * MIB, name="profile", remote=True) as bed:
        for run in range(1, args.runs + 1):
            profile_once(bed, args.every, args.perf if run == args.runs else None, run)


if __name__ == "__main__":
    main()
