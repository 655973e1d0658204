"""Benchmark: listing 200 registered VMs on the real VirtualBox 7.2 testbed, two ways.

Builds (first time) the testbed's Debian sid chroot, registers ``--vms`` VMs in
a fresh VirtualBox home (``createvm --register`` plus ``modifyvm``: 1 to 4 CPUs,
64 to 256 MiB), then lists every VM with id, name, state, CPUs and memory:

* ``anyvirt``: ``host.vms.list()`` (``list vms``, ``list runningvms`` and the
  VMs' own ``.vbox`` settings files);
* ``naive``: ``list vms`` then one ``showvminfo --machinereadable`` per VM, as
  scripts around VBoxManage usually do.

VBoxManage processes are counted by a wrapper in front of the testbed's
``VBoxManage`` that appends a line to a log for every process started; the
count is what that log says, not what anyvirt believes it ran. Both ways must
give the same rows.

    .venv/bin/python bench/virtualbox_list.py [--vms 200]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from anyvirt_virtualbox import listings, machinereadable
from anyvirt_virtualbox.testbed import Home, build_chroot, make_home

import anyvirt


def counting_wrapper(real: Path, directory: Path) -> tuple[Path, Path]:
    """A ``VBoxManage`` that logs one line per process, then runs the real one."""
    log = directory / "processes.log"
    wrapper = directory / "VBoxManage"
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {str(log)!r}\nexec {str(real)!r} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def processes(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def register(home: Home, count: int) -> None:
    for i in range(count):
        name = f"bench-{i:04d}"
        home.run("createvm", "--name", name, "--ostype", "Other", "--register")
        home.run("modifyvm", name, "--cpus", str(1 + i % 4), "--memory", str(64 * (1 + i % 4)))


def naive(home: Home) -> list[tuple[str, str, str, int, int]]:
    rows = []
    for vm in listings.list_vms(home.run("list", "vms").stdout):
        info = machinereadable.parse(home.run("showvminfo", vm.uuid, "--machinereadable").stdout)
        rows.append((info.get("UUID"), info.get("name"), info.get("VMState"), int(info.get("cpus")),
                     int(info.get("memory"))))
    return sorted(rows)


def with_anyvirt(home: Home) -> list[tuple[str, str, str, int, int]]:
    with anyvirt.connect(home.uri) as host:
        return sorted((v.id, v.name, v.raw_state, v.cpus, v.memory_mib) for v in host.vms.list())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=200)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="anyvirt-bench-vbox-"))
    try:
        wrapper, log = counting_wrapper(build_chroot(), base)
        home = make_home(wrapper, base)
        start = time.perf_counter()
        register(home, args.vms)
        print(f"registered {args.vms} VMs in {time.perf_counter() - start:.1f} s")
        results = {}
        for name, way in (("anyvirt", with_anyvirt), ("naive", naive)):
            before = processes(log)
            start = time.perf_counter()
            rows = way(home)
            seconds = time.perf_counter() - start
            results[name] = rows
            print(f"{name:8} {seconds:7.2f} s  {processes(log) - before:5d} VBoxManage processes  "
                  f"{len(rows)} VMs")
        assert results["anyvirt"] == results["naive"], "both ways must list the same VMs"
        print("(anyvirt's count includes its connect: one --version)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
