"""The driver against the real VirtualBox 7.2, read back with the real VBoxManage.

Everything a test does through anyvirt is checked with the testbed's own
``VBoxManage`` (``showvminfo``, ``snapshot list``, ``list vms``/``hdds``), not
through the driver that made it.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
from anyvirt_virtualbox import listings, runner
from anyvirt_virtualbox.snapshot_tree import parse_snapshot_list
from anyvirt_virtualbox.testbed import Home
from virtualbox_support import show

import anyvirt
from anyvirt.errors import (
    AlreadyExists,
    Cancelled,
    ConnectionFailed,
    InvalidSpec,
    InvalidState,
    NotFound,
    NotSupported,
)
from anyvirt.host import Host
from anyvirt.model import Capability, DiskSpec, Firmware, NicSpec, PowerState
from anyvirt.tasks import Job
from anyvirt.testing.plugin import small_spec

HOSTILE = "it's \"quoted\"; $(touch /tmp/anyvirt-pwned) `id` & | > ü ☃"


def test_a_hostile_name_reaches_virtualbox_as_one_argument(
    real_home: Home, real_host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[list[str], dict[str, Any]]] = []
    popen = subprocess.Popen

    def spy(argv: list[str], **kwargs: Any) -> Any:
        seen.append((list(argv), kwargs))
        return popen(argv, **kwargs)

    monkeypatch.setattr(runner.subprocess, "Popen", spy)
    vm = real_host.vms.create(small_spec(HOSTILE, description="line one\nline \"two\" \\ $(x)"))
    assert seen and all(not kw.get("shell") for _, kw in seen)
    assert any(HOSTILE in argv for argv, _ in seen), "the name is one argument, unchanged"
    assert not Path("/tmp/anyvirt-pwned").exists()
    # read back with the real VBoxManage
    listed = listings.list_vms(real_home.run("list", "vms").stdout)
    assert [(v.name, v.uuid) for v in listed] == [(HOSTILE, vm.id)]
    info = show(real_home, vm.id)
    assert info.get("name") == HOSTILE
    assert info.get("description") == "line one\nline \"two\" \\ $(x)"
    assert real_host.vms.get(HOSTILE).id == vm.id
    assert [v.name for v in real_host.vms.list()] == [HOSTILE]
    vm.delete()
    assert listings.list_vms(real_home.run("list", "vms").stdout) == []


def test_create_reads_back_as_specified(real_home: Home, real_host: Host) -> None:
    vm = real_host.vms.create(small_spec(
        "full-spec", cpus=2, memory_mib=80, firmware=Firmware.EFI,
        disks=[DiskSpec(size_gib=0.0625), DiskSpec(size_gib=0.03125, bus="ide")],
        nics=[NicSpec(mac="08:00:27:12:34:56", model="e1000"), NicSpec(network="internal:lab"),
              NicSpec(network="bridged:eth0", model="virtio")],
    ))
    info = show(real_home, vm.id)
    assert (info.get("cpus"), info.get("memory"), info.get("firmware")) == ("2", "80", "EFI")
    nic1 = ("nat", "080027123456", "82540EM")
    assert (info.get("nic1"), info.get("macaddress1"), info.get("nictype1")) == nic1
    assert (info.get("nic2"), info.get("intnet2")) == ("intnet", "lab")
    nic3 = ("bridged", "eth0", "virtio")
    assert (info.get("nic3"), info.get("bridgeadapter3"), info.get("nictype3")) == nic3
    media = {m.location: m for m in listings.media(real_home.run("list", "hdds").stdout)}
    sata, ide = info.get("SATA-0-0"), info.get("IDE-0-0")
    assert (media[sata].capacity_mib, media[ide].capacity_mib) == (64, 32)
    described = vm.info()
    assert [(d.id, d.bus, d.size_bytes) for d in described.disks] == [
        ("SATA-0-0", "sata", 64 * 2**20), ("IDE-0-0", "ide", 32 * 2**20)]
    assert [n.network for n in described.nics] == ["nat", "internal:lab", "bridged:eth0"]


def test_a_failed_create_leaves_nothing(real_home: Home, real_host: Host) -> None:
    with pytest.raises(InvalidSpec):  # refused before anything is sent
        real_host.vms.create(small_spec("half", nics=[NicSpec(network="somewhere")]))
    assert listings.list_vms(real_home.run("list", "vms").stdout) == []
    # cancelled once the first disk is made and attached, with a second one to go
    job = Job("create")

    def progress(percent: float | None, message: str) -> None:
        if message.startswith("disk 1 of"):
            job.request_cancel()

    job._on_progress = progress
    bad = small_spec("half2", disks=[DiskSpec(size_gib=0.0625), DiskSpec(size_gib=0.0625)])
    with pytest.raises(Cancelled):
        real_host.driver.create_vm(bad, job)
    # VirtualBox refuses 65 CPUs in modifyvm, right after createvm registered the VM
    with pytest.raises(anyvirt.AnyvirtError):
        real_host.driver.create_vm(small_spec("half3", cpus=65), Job("create"))
    assert listings.list_vms(real_home.run("list", "vms").stdout) == []
    assert listings.media(real_home.run("list", "hdds").stdout) == []
    assert not any(real_home.machine_folder.rglob("*.vdi"))


def test_snapshots_clones_reconfigure_delete_read_back(real_home: Home, real_host: Host) -> None:
    vm = real_host.vms.create(small_spec("orig"))
    s1 = vm.snapshots.create("s1", description='the "first"')
    vm.snapshots.create("s2")
    s1.revert()
    vm.snapshots.create("s3")
    tree = parse_snapshot_list(real_home.run("snapshot", vm.id, "list", "--machinereadable").stdout)
    names = {n.uuid: n.name for n in tree.nodes}
    assert {(names.get(n.parent or ""), n.name) for n in tree.nodes} == {
        (None, "s1"), ("s1", "s2"), ("s1", "s3")}
    assert names[tree.current or ""] == "s3"
    ours = {s.name: s for s in vm.snapshots.list()}
    assert {s.id: s.name for s in ours.values()} == names
    assert ours["s1"].description == 'the "first"' and ours["s1"].created is not None

    full = vm.clone("full")
    linked = vm.clone("linked", linked=True)
    media = {m.uuid: m for m in listings.media(real_home.run("list", "hdds").stdout)}
    orig_disk = show(real_home, vm.id).get("SATA-ImageUUID-0-0")
    full_disk = show(real_home, full.id).get("SATA-ImageUUID-0-0")
    linked_disk = show(real_home, linked.id).get("SATA-ImageUUID-0-0")
    assert media[full_disk].parent is None and "/full/" in media[full_disk].location
    chain = []
    m = media[linked_disk]
    while m.parent:
        m = media[m.parent]
        chain.append(m.uuid)
    assert chain and chain[-1] == _base(media, orig_disk), "the linked clone reads from the original's base"
    assert linked.info().disks[0].backing == media[chain[-1]].location
    assert real_host.driver.linked_clones(vm.id) == ["linked"]
    macs = {n.mac for n in vm.info().nics}
    assert not macs & {n.mac for n in full.info().nics} and not macs & {n.mac for n in linked.info().nics}

    linked.reconfigure(cpus=3, memory_mib=72)
    got = show(real_home, linked.id)
    assert (got.get("cpus"), got.get("memory")) == ("3", "72")
    assert show(real_home, vm.id).get("cpus") == "1"

    # the linked clone reads from s3's disk state: VirtualBox will not merge it away
    with pytest.raises(InvalidState):
        vm.snapshots.get("s3").delete()
    assert len(vm.snapshots.list()) == 3
    for clone in (linked, full):
        folder = Path(clone.info().extra["config_file"]).parent
        clone.delete()
        assert not folder.exists()
    assert {v.name for v in listings.list_vms(real_home.run("list", "vms").stdout)} == {"orig"}
    s1.delete(children=True)
    listed = real_home.run("snapshot", vm.id, "list", "--machinereadable", check=False)
    assert listed.returncode == 1 and "does not have any snapshots" in listed.stdout  # 7.2 exits 1
    assert parse_snapshot_list(listed.stdout).nodes == ()
    assert vm.snapshots.list() == []


def _base(media: dict[str, listings.Medium], uuid: str) -> str:
    m = media[uuid]
    while m.parent:
        m = media[m.parent]
    return m.uuid


def test_errors_provoked_on_real(real_home: Home, real_host: Host) -> None:
    driver = real_host.driver
    with pytest.raises(NotFound, match="nosuch"):
        driver.vm_info("nosuch")
    vm = real_host.vms.create(small_spec("dup"))
    with pytest.raises(AlreadyExists):  # past the gate, straight to VirtualBox
        driver.create_vm(small_spec("dup"), Job("dup"))
    assert [v.name for v in listings.list_vms(real_home.run("list", "vms").stdout)] == ["dup"]
    with pytest.raises(NotFound):
        driver.revert_snapshot(vm.id, "00000000-0000-0000-0000-000000000000", Job("r"))


def test_session_locks_are_retried(real_home: Home, real_host: Host) -> None:
    vm = real_host.vms.create(small_spec("locks"))
    vbox = real_host.driver.native

    def raw(i: int) -> int:
        return real_home.run("modifyvm", vm.id, "--cpus", str(1 + i % 2), check=False).returncode

    def ours(i: int) -> None:
        vbox.run(["modifyvm", vm.id, "--cpus", str(1 + i % 2)], "changing CPUs")

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(raw, range(12)))
    assert any(codes), "parallel raw modifyvm calls clash on the session lock"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(ours, range(8)))  # every one succeeds, retried past the lock


def test_listing_costs_a_fixed_number_of_processes(real_home: Home, real_host: Host) -> None:
    for i in range(5):
        real_host.driver.create_vm(small_spec(f"many-{i}"), Job("c"))
    vbox = real_host.driver.native
    before = vbox.processes - vbox.stalls  # a stalled read asked again is not a second question
    listed = real_host.vms.list()
    # `list vms` alone: with no kernel driver nothing can run, so no `list runningvms`
    assert vbox.processes - vbox.stalls - before == 1
    assert sorted(v.name for v in listed) == [f"many-{i}" for i in range(5)]
    assert all((v.cpus, v.memory_mib, v.state) == (1, 64, PowerState.STOPPED) for v in listed)


def test_connection_version_and_kernel_driver(real_home: Home, real_host: Host, tmp_path: Path) -> None:
    info = real_host.info()
    assert info.hypervisor == "VirtualBox" and info.hypervisor_version == "7.2.22"
    assert info.extra["version"] == "7.2.22_Debian" and info.extra["revision"] == 175245
    assert info.extra["kernel_driver"] is False and "/dev/vboxdrv" in info.extra["kernel_driver_warning"]
    assert info.extra["machine_folder"] == str(real_home.machine_folder)
    assert Capability.START not in real_host.capabilities
    vm = real_host.vms.create(small_spec("nodrv"))
    with pytest.raises(NotSupported, match="vboxdrv"):
        vm.start()
    with pytest.raises(ConnectionFailed, match="not an executable"):
        anyvirt.connect(f"virtualbox://{tmp_path}/no/VBoxManage")
    # the testbed's wrapper prints what Debian's own /usr/bin/VBoxManage script prints
    debian = attrs.evolve(real_home, vboxmanage=real_home.vboxmanage.with_name("VBoxManage-debian"))
    for args in (["--version"], ["list", "vms"], ["showvminfo", vm.id, "--machinereadable"]):
        assert debian.run(*args).stdout == real_home.run(*args).stdout
    assert real_home.run("--version").stdout.startswith("WARNING: The character device /dev/vboxdrv")
    with anyvirt.connect(debian.uri) as through_debian:
        assert through_debian.info().extra["kernel_driver"] is False
        assert Capability.START not in through_debian.capabilities
    with pytest.raises(InvalidSpec):
        anyvirt.connect(f"{real_home.uri}&bogus=1")


def test_disk_export(real_home: Home, real_host: Host, tmp_path: Path) -> None:
    vm = real_host.vms.create(small_spec("appliance", cpus=2, memory_mib=72))
    vm.snapshots.create("s1")  # the exported disk is the flattened current state
    driver = real_host.driver
    disks = driver.export_disks(vm.id, tmp_path, Job("export"))
    assert [(d.format, d.size_bytes) for d in disks] == [("vdi", 64 * 2**20)]
    assert Path(disks[0].path).is_file()
    assert disks[0].path not in {m.location for m in listings.media(real_home.run("list", "hdds").stdout)}
