"""The operation gate on a real libvirtd: whole-operation deadlines and the overcommit
limit under 20 threads of mixed operations."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import anyvirt
from anyvirt.errors import Timeout
from anyvirt.host import Host
from anyvirt.model import DiskSpec, Overcommit, VMSpec
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.stress import mixed_operations
from anyvirt.vm import VM


def _volumes(host: Host) -> set[str]:
    return {v for p in host.native.listAllStoragePools(0) if p.isActive()
            for v in p.listVolumes()}


def test_timeout_bounds_a_create_and_the_late_vm_is_removed(host: Host, tmp_path: Path) -> None:
    # a 512 MiB image of random data: uploading it into the pool takes well over a second
    image = tmp_path / "big.raw"
    with open(image, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(8 * 1024 * 1024))
    name = unique_name("slow")
    before = _volumes(host)
    started = time.monotonic()
    with pytest.raises(Timeout):
        host.vms.create(VMSpec(name=name, memory_mib=16, disks=[DiskSpec(image=str(image))]),
                        timeout=0.5)
    assert time.monotonic() - started < 1.5, "the caller is released at the deadline"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (host.vms.exists(name) or _volumes(host) - before):
        time.sleep(0.2)
    assert not host.vms.exists(name), "what the create made after its deadline is removed"
    assert _volumes(host) - before == set(), "and so are its volumes"


def test_twenty_threads_never_pass_the_overcommit_limit(host: Host) -> None:
    base = host.info()
    room_cpus, room_mib = 6, 6 * 32
    limited = anyvirt.connect(host.uri, overcommit=Overcommit(
        cpu=(base.allocation.vcpus + room_cpus) / base.cpus,
        memory=(base.allocation.memory_mib + room_mib) / base.memory_mib, counts="defined"))
    try:
        report = mixed_operations(
            limited, lambda n: VMSpec(name=n, cpus=1, memory_mib=32), threads=20, seconds=8.0,
            prefix=unique_name("st"))
    finally:
        limited.close()
    assert report.unexpected == []
    assert report.max_vcpus <= base.allocation.vcpus + room_cpus, report
    assert report.max_memory_mib <= base.allocation.memory_mib + room_mib, report
    assert report.outcomes["CapacityExceeded"] > 0, "the mix must push against the limit"
    assert report.outcomes["create"] > 0


def test_readme_example_runs_as_written(host: Host) -> None:
    """The README's example (snapshot with memory, revert, linked clone of the running VM,
    stop as a Task) on a real daemon: it must end as it does on memory://."""
    import importlib.util

    readme_tests = Path(__file__).resolve().parents[3] / "tests" / "test_readme.py"
    spec = importlib.util.spec_from_file_location("readme_tests", readme_tests)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = {v.name for v in host.vms.list()}
    code = module.readme_example(host.uri)
    exec(compile(code, "README.md", "exec"), {})
    assert {v.name for v in host.vms.list()} == before, "the example cleans up after itself"


def test_a_kept_template_disk_outlives_its_last_linked_clone(
    host: Host, guest: Callable[[str], VM], vms: Callable[[VM], VM]
) -> None:
    template = guest("keep")
    template.mark_template()
    disk = template.info().disks[0].path
    assert disk is not None
    clone = vms(template.clone(unique_name("keep-c"), linked=True))
    template.delete(disks=False)  # the user keeps the template's disk
    clone.delete(disks=True)
    assert os.path.exists(disk), "a linked clone's deletion never takes another VM's disk"
    host.native.storageVolLookupByPath(disk).delete(0)


def test_the_last_linked_clone_takes_its_frozen_base_along(
    host: Host, guest: Callable[[str], VM], vms: Callable[[VM], VM]
) -> None:
    vm = guest("frz")
    vm.snapshots.create("s")  # a VM with snapshots: its clones sit on a frozen copy
    before = _volumes(host)
    clone = vms(vm.clone(unique_name("frz-c"), linked=True))
    base = clone.info().disks[0].backing
    assert base is not None and "-frozen-" in base
    clone.delete(disks=True)
    assert _volumes(host) == before, "no orphan frozen copy"
