"""Create, lifecycle, reconfigure, delete and tasks through the public API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from anyvirt_vsphere.datastore_files import download
from anyvirt_vsphere.driver import VSphereDriver
from anyvirt_vsphere.sdk import vim, vmodl
from anyvirt_vsphere.tasks import wait_task
from anyvirt_vsphere.testbed.vcsim import Vcsim
from vsphere_support import vsphere_driver

from anyvirt.errors import Cancelled, CapacityExceeded, InvalidSpec, InvalidState, NotFound, TaskFailed
from anyvirt.host import Host
from anyvirt.model import DiskSpec, Firmware, NicSpec, PowerState, VMSpec
from anyvirt.tasks import Job
from anyvirt.testing.suite.spy import recording


def test_create_builds_the_config_spec(vsphere_host: Host, spec_for: Callable[[str], VMSpec]) -> None:
    spec = attrs.evolve(
        spec_for("full-spec"),
        cpus=2,
        memory_mib=256,
        disks=[DiskSpec(size_gib=1), DiskSpec(size_gib=0.5)],
        nics=[NicSpec(network="VM Network", mac="00:50:56:01:02:03"), NicSpec(model="e1000")],
        firmware=Firmware.EFI,
        guest_os="debian",
        description="made by anyvirt",
    )
    vm = vsphere_host.vms.create(spec)
    try:
        info = vm.info()
        assert (info.cpus, info.memory_mib) == (2, 256)
        assert info.firmware is Firmware.EFI
        assert info.guest_os == "debian" and info.extra["guest_id"] == "debian11_64Guest"
        assert info.description == "made by anyvirt"
        assert [d.size_bytes for d in info.disks] == [1024**3, 512 * 1024**2]
        assert {d.bus for d in info.disks} == {"scsi"}
        assert [d.id for d in info.disks] == ["scsi0:0", "scsi0:1"]
        assert all(d.path and d.path.endswith(".vmdk") for d in info.disks)
        assert info.nics[0].mac == "00:50:56:01:02:03" and info.nics[0].network == "VM Network"
        assert [n.model for n in info.nics] == ["vmxnet3", "e1000"]
    finally:
        vm.delete()


def test_disks_on_every_bus_vsphere_has(vsphere_host: Host, spec_for: Callable[[str], VMSpec]) -> None:
    """SATA (AHCI) and NVMe get their controller, IDE uses the built-in two; virtio is SCSI."""
    buses = ["scsi", "sata", "sata", "nvme", "ide", "ide", "ide", "virtio", None]
    spec = attrs.evolve(spec_for("every-bus"), disks=[DiskSpec(size_gib=0.01, bus=b) for b in buses])
    vm = vsphere_host.vms.create(spec)
    try:
        assert [d.id for d in vm.info().disks] == [
            "scsi0:0", "sata0:0", "sata0:1", "nvme0:0", "ide0:0", "ide0:1", "ide1:0", "scsi0:1", "scsi0:2",
        ]
    finally:
        vm.delete()
    # a backup from a platform with SATA disks keeps them on SATA (guest drivers!)
    assert "sata" in VSphereDriver.disk_buses
    with pytest.raises(InvalidSpec, match="at most 4"):
        vsphere_host.vms.create(
            attrs.evolve(spec_for("too-many-ide"), disks=[DiskSpec(size_gib=0.01, bus="ide")] * 5)
        )
    assert "too-many-ide" not in vsphere_host.vms


def test_nic_on_a_distributed_port_group(vcenter_host: Host) -> None:
    spec = VMSpec(name="on-dvpg", nics=[NicSpec(network="DC0_DVPG0")], node="DC0_C0_H0")
    vm = vcenter_host.vms.create(spec)
    try:
        assert [n.network for n in vm.info().nics] == ["DC0_DVPG0"]
    finally:
        vm.delete()


def test_the_portable_default_network_name_means_the_default_port_group(
    vsphere_host: Host, spec_for: Callable[[str], VMSpec]
) -> None:
    """``NicSpec(network="default")`` (libvirt's name, used by portable specs and backups)
    lands on the port group ``NicSpec()`` would choose when no network has that name."""
    spec = attrs.evolve(spec_for("default-net"), nics=[NicSpec(network="default"), NicSpec()])
    vm = vsphere_host.vms.create(spec)
    try:
        assert [n.network for n in vm.info().nics] == ["VM Network", "VM Network"]
    finally:
        vm.delete()


def test_a_mac_outside_vmwares_static_range_is_refused_before_any_task(
    vsphere_host: Host, spec_for: Callable[[str], VMSpec]
) -> None:
    # what migrations and restores keep (the driver's mac_prefixes) is what create accepts
    kept = {"00:50:56:3f:ff:ff": True, "00:50:56:00:00:01": True, "00:50:56:80:12:34": False}
    for mac, static in kept.items():
        assert mac.startswith(VSphereDriver.mac_prefixes or ()) is static
    for mac in ("52:54:00:12:34:56", "00:50:56:40:00:01", "00:50:56:80:12:34"):
        spec = attrs.evolve(spec_for("foreign-mac"), nics=[NicSpec(mac=mac)])
        with pytest.raises(InvalidSpec, match="00:50:56:3f:ff:ff"):
            vsphere_host.vms.create(spec)
    assert "foreign-mac" not in vsphere_host.vms


def test_more_cpus_than_the_host_has_is_refused_before_any_task(
    vsphere_host: Host, spec_for: Callable[[str], VMSpec]
) -> None:
    """vSphere bounds one VM by its host (``bounds_vm_by_node``): the gate refuses a VM
    bigger than its node, with the CapacityExceeded every backend's refusal of that rule
    raises, before the driver is asked anything."""
    driver = vsphere_driver(vsphere_host)
    node = vsphere_host.nodes.list()[0]
    spec = attrs.evolve(spec_for("too-big"), cpus=node.info.cpus + 1, node=node.id)
    tasks_before = driver.session.content.taskManager.recentTask
    with recording(vsphere_host) as calls, pytest.raises(CapacityExceeded, match="logical CPUs"):
        vsphere_host.vms.create(spec)
    assert calls == []
    assert driver.session.content.taskManager.recentTask == tasks_before
    assert not vsphere_host.vms.exists("too-big")
    vm = vsphere_host.vms.create(attrs.evolve(spec, cpus=1))
    try:
        with recording(vsphere_host) as calls, pytest.raises(CapacityExceeded, match="MiB"):
            vm.reconfigure(memory_mib=node.info.memory_mib + 1)
        assert calls == [] and vm.refresh().memory_mib == spec.memory_mib
    finally:
        vm.delete()


def test_bad_network_or_datastore_leaves_nothing_behind(
    vsphere_host: Host, spec_for: Callable[[str], VMSpec]
) -> None:
    before = {vm.id for vm in vsphere_host.vms.list()}
    with pytest.raises(InvalidSpec, match="no network"):
        vsphere_host.vms.create(attrs.evolve(spec_for("bad-net"), nics=[NicSpec(network="nope")]))
    with pytest.raises(InvalidSpec, match="no datastore"):
        vsphere_host.vms.create(
            attrs.evolve(spec_for("bad-ds"), disks=[DiskSpec(size_gib=1, storage="nope")])
        )
    second_on_nope = [DiskSpec(size_gib=1), DiskSpec(size_gib=1, storage="nope")]
    with pytest.raises(InvalidSpec, match="no datastore named 'nope'"):
        vsphere_host.vms.create(attrs.evolve(spec_for("bad-2nd-ds"), disks=second_on_nope))
    with pytest.raises(InvalidSpec, match="guest_os"):
        vsphere_host.vms.create(attrs.evolve(spec_for("bad-os"), guest_os="plan9-from-mars"))
    assert {vm.id for vm in vsphere_host.vms.list()} == before


def test_a_create_that_fails_in_vsphere_removes_what_it_made(
    vsphere_host: Host, spec_for: Callable[[str], VMSpec]
) -> None:
    """A disk image that does not exist fails inside CreateVM_Task: no VM, no folder stays."""
    before = {vm.id for vm in vsphere_host.vms.list()}
    ds = vsphere_host.info().storage[0].name
    spec = attrs.evolve(spec_for("half-made"), disks=[DiskSpec(image=f"[{ds}] missing/missing.vmdk")])
    driver = vsphere_driver(vsphere_host)  # the handle refuses images; the driver takes a VMDK path
    with pytest.raises(TaskFailed) as err:
        driver.create_vm(spec, Job("create", 30))
    assert err.value.fault and err.value.task_id
    assert {vm.id for vm in vsphere_host.vms.list()} == before
    with pytest.raises(NotFound, match="404"):
        download(vsphere_host, ds, "half-made/half-made.vmx", bytearray_sink())


@pytest.mark.parametrize("way", ["lease", "datastore"])
def test_a_create_cancelled_after_its_upload_leaves_nothing_behind(
    vsphere_host: Host, vcsim: Vcsim, spec_for: Callable[[str], VMSpec], tmp_path: Path,
    way: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled once the image is sent (through an import lease: before the lease is
    completed; through the datastore, the way a host that keeps no lease upload is served:
    before CreateVM_Task): the cleanup (which gets its own time budget, the job being
    cancelled) removes the VM the lease made, its folder and any upload."""
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\x01" * 1024 * 1024)
    assert vcsim.datastore_dir is not None
    driver = vsphere_driver(vsphere_host)
    monkeypatch.setattr(driver, "nfc_keeps_uploads", way == "lease")

    def imports() -> set[str]:
        return {p.name for p in vcsim.datastore_dir.rglob("anyvirt-import-*")}  # type: ignore[union-attr]

    before_imports, before_vms = imports(), {vm.id for vm in vsphere_host.vms.list()}
    sent: list[str] = []

    def cancel_when_sent(_percent: float | None, message: str) -> None:
        if way == "lease" and message.startswith("uploading") and " of " in message:
            sent.append(message)
            job.request_cancel()
        if way == "datastore" and message.startswith("creating"):
            assert imports() - before_imports  # the image is on the datastore by now
            sent.append(message)
            job.request_cancel()

    job = Job("create", 60, on_progress=cancel_when_sent)
    spec = attrs.evolve(spec_for("cancelled-create"), disks=[DiskSpec(image=str(image))])
    with pytest.raises(Cancelled):
        driver.create_vm(spec, job)
    assert sent
    assert {vm.id for vm in vsphere_host.vms.list()} == before_vms
    assert imports() == before_imports
    assert not list(vcsim.datastore_dir.rglob("cancelled-create"))


class bytearray_sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)


def test_lifecycle_with_normalised_meanings(vsphere_host: Host, spec_for: Callable[[str], VMSpec]) -> None:
    vm = vsphere_host.vms.create(spec_for("life"))
    try:
        vm.start()
        assert vm.state is PowerState.RUNNING and vm.refresh().raw_state == "poweredOn"
        with pytest.raises(InvalidState, match=r"force=True") as err:
            vm.stop()  # vcsim has no guest, so no VMware Tools
        assert "VMware Tools" in str(err.value)
        assert vm.refresh().state is PowerState.RUNNING
        vm.reset()
        assert vm.refresh().state is PowerState.RUNNING
        vm.suspend()
        assert vm.refresh().state is PowerState.SUSPENDED and vm.raw_state == "suspended"
        vm.start()
        assert vm.refresh().state is PowerState.RUNNING
        vm.stop(force=True)
        assert vm.refresh().state is PowerState.STOPPED and vm.raw_state == "poweredOff"
    finally:
        vm.delete()


def test_reboot_is_withdrawn_on_vcsim(vsphere_host: Host) -> None:
    from anyvirt.model import Capability

    assert Capability.REBOOT not in vsphere_host.capabilities
    assert Capability.STOP in vsphere_host.capabilities
    assert Capability.PAUSE not in vsphere_host.capabilities


def test_reconfigure_a_running_vm_without_hot_add_is_refused(
    vsphere_host: Host, spec_for: Callable[[str], VMSpec]
) -> None:
    vm = vsphere_host.vms.create(spec_for("reconf"))
    try:
        vm.reconfigure(cpus=2, memory_mib=128)
        assert (vm.refresh().cpus, vm.memory_mib) == (2, 128)
        vm.start()
        with recording(vsphere_host) as calls, pytest.raises(InvalidState, match="hot-add"):
            vm.reconfigure(cpus=1)
        assert calls == []  # the gate refuses it (running_takes), the driver is not asked
        vm.suspend()
        with pytest.raises(InvalidState, match="suspended"):
            vm.reconfigure(memory_mib=96)
        assert (vm.refresh().cpus, vm.memory_mib) == (2, 128)
        vm.stop(force=True)
    finally:
        vm.delete()


def test_delete_removes_the_disks(vsphere_host: Host, spec_for: Callable[[str], VMSpec]) -> None:
    vm = vsphere_host.vms.create(spec_for("del-disks"))
    path = vm.info().disks[0].path
    assert path is not None
    ds, rel = path[1:].split("] ", 1)
    sink = bytearray_sink()
    download(vsphere_host, ds, rel.replace(".vmdk", "-flat.vmdk"), sink)
    vm.delete(disks=True)
    assert not vsphere_host.vms.exists(vm.id)
    with pytest.raises(NotFound, match="404"):
        download(vsphere_host, ds, rel, bytearray_sink())


def test_task_progress_and_failure_carry_vsphere_details(
    vsphere_host: Host, spec_for: Callable[[str], VMSpec]
) -> None:
    vm = vsphere_host.vms.create(spec_for("task"))
    try:
        progress: list[float | None] = []
        task = vm.start(wait=False, on_progress=lambda t: progress.append(t.progress))
        task.wait(30)
        assert task.native_id.startswith("task-")
        assert progress and progress[-1] == 100.0
        driver = vsphere_driver(vsphere_host)
        ref = driver.inventory.vm_ref(vm.id)
        failing = ref.PowerOnVM_Task(None)  # already on: vSphere fails the task
        with pytest.raises(TaskFailed) as err:
            wait_task(driver.collector, failing, Job("again", 30), "powering on again")
        assert err.value.fault == "InvalidPowerState"
        assert err.value.task_id == failing._moId
        assert isinstance(ref, vim.VirtualMachine)
        vm.stop(force=True)
    finally:
        vm.delete()


def test_fault_messages_name_the_bad_property() -> None:
    from anyvirt_vsphere.errors import fault_message, translate

    from anyvirt.errors import AlreadyExists

    bad = vmodl.fault.InvalidArgument(invalidProperty="spec.location.host")
    assert fault_message(bad) == "InvalidArgument (spec.location.host)"
    error = translate(vim.fault.DuplicateName(name="web1", msg="The name 'web1' already exists."), "cloning")
    assert isinstance(error, AlreadyExists)
    assert str(error) == "cloning: The name 'web1' already exists. (DuplicateName)"
