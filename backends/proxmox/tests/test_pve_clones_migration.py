"""Templates, linked and full clones, and moving VMs between nodes (through MigrationStandIn)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from anyvirt_proxmox import ProxmoxExtensions
from fakepve import FakePve
from pve_support import PASSWORD, InProcessFakePve, MigrationStandIn, Send, StandIn, Traffic, pve_response

import anyvirt
from anyvirt import Capability, DiskSpec, NicSpec, PowerState, VMSpec
from anyvirt.errors import InvalidSpec, InvalidState, NotSupported
from anyvirt.host import Host
from anyvirt.rules import least_loaded
from anyvirt.testing.suite.spy import recording
from anyvirt.vm import VM


@pytest.fixture
def make(pve_host: Host) -> Iterator[Callable[..., VM]]:
    made: list[VM] = []

    def create(name: str, node: str = "pve1") -> VM:
        vm = pve_host.vms.create(VMSpec(name=name, cpus=1, memory_mib=64, disks=[DiskSpec(size_gib=0.0625)],
                                        nics=[NicSpec()], node=node))
        made.append(vm)
        return vm

    create.track = made.append  # type: ignore[attr-defined]
    yield create
    for vm in reversed(made):
        try:
            vm.refresh()
            if vm.state is PowerState.RUNNING:
                vm.stop(force=True)
            vm.delete()
        except Exception:
            continue


def _bodies(traffic: Traffic, suffix: str) -> list[dict[str, str]]:
    return [traffic.bodies[i] for i, (m, url) in enumerate(traffic.requests)
            if m == "POST" and url.endswith(suffix)]


def test_linked_clones_are_template_only(pve_host: Host, make: Callable[..., VM], traffic: Traffic) -> None:
    vm = make("plain")
    with pytest.raises(NotSupported, match="only of templates") as refused:
        vm.clone("plain-linked", linked=True)
    assert refused.value.capability is Capability.LINKED_CLONE
    with pytest.raises(NotSupported, match="keep them"):
        vm.delete(disks=False)
    assert not _bodies(traffic, "/clone") and not _bodies(traffic, "/template")


def test_template_and_linked_clones(pve_host: Host, make: Callable[..., VM], traffic: Traffic) -> None:
    base = make("base")
    base.mark_template()
    assert base.template and pve_host.vms.get("base").template
    with pytest.raises(InvalidState, match="template"):
        base.start()
    with pytest.raises(NotSupported, match="one-way"):
        base.convert_to_vm()
    task = base.clone("web-1", linked=True, wait=False)
    clones = [task.wait(30), base.clone("web-2", linked=True, node="pve1")]
    for c in clones:
        make.track(c)  # type: ignore[attr-defined]
    assert [c.name for c in clones] == ["web-1", "web-2"] and not clones[0].template
    assert [b["full"] for b in _bodies(traffic, "/clone")] == ["0", "0"]
    full = base.clone("web-full")  # a full clone of a template through the core
    make.track(full)  # type: ignore[attr-defined]
    assert _bodies(traffic, "/clone")[-1]["full"] == "1"
    assert {n.mac for n in clones[0].info().nics}.isdisjoint({n.mac for n in base.info().nics})
    clones[0].start()
    assert clones[0].state is PowerState.RUNNING


def test_full_clone_of_a_running_vm(make: Callable[..., VM], traffic: Traffic) -> None:
    vm = make("runner")
    vm.start()
    clone = vm.clone("runner-copy")
    make.track(clone)  # type: ignore[attr-defined]
    assert clone.state is PowerState.STOPPED and clone.id != vm.id
    assert _bodies(traffic, "/clone")[-1]["full"] == "1"
    assert vm.refresh().state is PowerState.RUNNING


def test_clone_to_another_node_needs_shared_storage(make: Callable[..., VM], traffic: Traffic) -> None:
    vm = make("localdisk")
    with pytest.raises(InvalidSpec, match="shared storage"):
        vm.clone("elsewhere", node="pve2")
    assert not _bodies(traffic, "/clone")


def test_bad_clone_names_are_refused(make: Callable[..., VM], traffic: Traffic) -> None:
    vm = make("named")
    with pytest.raises(InvalidSpec, match="DNS"):
        vm.clone("copy of named")
    assert not _bodies(traffic, "/clone")


def test_cold_migration_takes_local_disks_along(pve_host: Host, make: Callable[..., VM],
                                               migration_standin: MigrationStandIn) -> None:
    vm = make("cold")
    result = vm.migrate(to=pve_host.nodes.get("pve3"), live=False)
    assert vm.node == "pve3" and pve_host.vms.get(vm.id).node == "pve3"
    assert result.source.endswith("/pve1") and result.target.endswith("/pve3") and not result.live
    assert migration_standin.moves[-1] == {"target": "pve3", "with-local-disks": "1"}


def test_live_migration(pve_host: Host, make: Callable[..., VM], migration_standin: MigrationStandIn) -> None:
    vm = make("live")
    vm.start()
    result = vm.migrate(to=pve_host.nodes.get("pve2"))
    assert result.live and vm.node == "pve2" and vm.refresh().state is PowerState.RUNNING
    assert migration_standin.moves[-1]["online"] == "1"


class RefusingPrecheckStandIn(StandIn):
    """Stand-in for PVE's precheck of a VM it will not move: a passed-through PCI device
    (``local_resources``) and a target outside ``allowed_nodes``."""

    def __init__(self, resources: list[str], allowed: list[str]) -> None:
        self.resources, self.allowed = resources, allowed

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        if request.method != "GET" or not str(request.url).split("?")[0].endswith("/migrate"):
            return None
        return pve_response(request, 200, {"running": 0, "allowed_nodes": self.allowed, "local_disks": [],
                                           "local_resources": self.resources, "has-dbus-vmstate": 0,
                                           "mapped-resources": [], "mapped-resource-info": {}})


@pytest.mark.parametrize(("resources", "allowed", "why"), [
    (["hostpci0"], ["pve2", "pve3"], "resources local"), ([], ["pve3"], "does not allow")])
def test_what_the_precheck_refuses_is_refused_before_the_move(
        pve_host: Host, make: Callable[..., VM], traffic: Traffic, resources: list[str], allowed: list[str],
        why: str) -> None:
    vm = make("pinned")
    traffic.standins.insert(0, RefusingPrecheckStandIn(resources, allowed))
    with pytest.raises(InvalidState, match=why):
        vm.migrate(to=pve_host.nodes.get("pve2"), live=False)
    assert not _bodies(traffic, "/migrate")
    assert vm.refresh().node == "pve1"


def test_evacuate_a_node(pve_host: Host, make: Callable[..., VM]) -> None:
    vms = [make(f"evac{i}", node="pve2") for i in range(3)]
    vms[0].start()
    results = pve_host.evacuate("pve2")
    assert len(results) == 3 and {r.live for r in results} == {True, False}
    assert not [vm for vm in pve_host.vms.list() if vm.node == "pve2"]
    assert {vm.refresh().node for vm in vms} <= {"pve1", "pve3"}


def test_moving_to_another_cluster_is_not_supported(pve_host: Host, make: Callable[..., VM],
                                                    traffic: Traffic) -> None:
    vm = make("stay")
    with anyvirt.connect("memory://other-cluster") as other, pytest.raises(InvalidSpec):
        vm.migrate(to=other, live=False)
    assert not _bodies(traffic, "/migrate")


def test_a_move_to_another_cluster_is_refused_before_anything_is_sent(
        pve_host: Host, make: Callable[..., VM], traffic: Traffic, certificate: tuple[Path, Path]) -> None:
    """The gate asks ``can_reach``: another PVE cluster is not, and it says so in the same
    error type every backend uses, before the driver is asked anything."""
    elsewhere = InProcessFakePve(*certificate)
    try:
        elsewhere.sync(lambda: setattr(elsewhere.pve, "cluster_name", "elsewhere"))
        vm = make("stay-home")
        with anyvirt.connect(elsewhere.uri, password=PASSWORD) as other:
            with recording(pve_host) as calls, pytest.raises(NotSupported,
                                                             match="cannot move a VM to"):
                vm.migrate(to=other, live=False)
            assert calls == [] and other.vms.list() == []
        assert not _bodies(traffic, "/migrate")
    finally:
        elsewhere.stop()


def test_the_gate_names_the_least_loaded_node(pve_host: Host, make: Callable[..., VM]) -> None:
    """PVE does not schedule (``schedules_vms`` is False): a VM with no node named goes to
    the node the gate picks, the one with the least memory given out."""
    make("load-pve1", node="pve1")
    expected = least_loaded([n.info for n in pve_host.nodes.list()],
                            [(vm.node or "", vm.memory_mib) for vm in pve_host.vms.list()]).id
    sent: list[str | None] = []
    driver = pve_host.driver
    original = driver.create_vm

    def create_vm(spec: VMSpec, job: Any) -> Any:
        sent.append(spec.node)
        return original(spec, job)

    driver.create_vm = create_vm  # type: ignore[method-assign]
    try:
        placed = pve_host.vms.create(VMSpec(name="placed", cpus=1, memory_mib=64,
                                            disks=[DiskSpec(size_gib=0.0625)], nics=[NicSpec()]))
    finally:
        del driver.create_vm
    make.track(placed)  # type: ignore[attr-defined]
    assert sent == [expected] and placed.node == expected


@pytest.fixture
def shared_storage(fake: InProcessFakePve, pve: FakePve) -> Iterator[str]:
    fake.sync(lambda: pve.add_ceph_storage("ceph-pool"))  # shared by every node
    yield "ceph-pool"
    fake.sync(lambda: pve.storages.pop("ceph-pool"))


def test_clone_to_another_node_and_storage(pve_host: Host, make: Callable[..., VM], traffic: Traffic,
                                           shared_storage: str) -> None:
    src = pve_host.vms.create(VMSpec(name="onshared", memory_mib=64, node="pve1",
                                     disks=[DiskSpec(size_gib=0.0625, storage=shared_storage)]))
    make.track(src)  # type: ignore[attr-defined]
    there = src.clone("onshared-copy", node="pve3")
    make.track(there)  # type: ignore[attr-defined]
    assert there.node == "pve3" and _bodies(traffic, "/clone")[-1]["target"] == "pve3"
    local = src.clone("onshared-local", storage="local-lvm")
    make.track(local)  # type: ignore[attr-defined]
    assert [d.storage for d in local.info().disks] == ["local-lvm"]
    assert _bodies(traffic, "/clone")[-1]["storage"] == "local-lvm"


def test_migration_to_a_storage_and_its_warnings(pve_host: Host, make: Callable[..., VM], traffic: Traffic,
                                                 migration_standin: MigrationStandIn) -> None:
    from test_pve_vms import WarningsStandIn

    vm = make("tostorage")
    traffic.standins.insert(0, WarningsStandIn("qmigrate"))
    result = vm.migrate(to=pve_host.nodes.get("pve2"), live=False, storage="local-lvm")
    assert migration_standin.moves[-1] == {"target": "pve2", "with-local-disks": "1",
                                           "targetstorage": "local-lvm"}
    assert result.warnings == ("WARN: guest agent is not running",)


def test_details_of_many_vms(pve_host: Host, make: Callable[..., VM]) -> None:
    vms = [make(f"detail{i}") for i in range(3)]
    infos = pve_host.extension(ProxmoxExtensions).vm_infos([vm.id for vm in vms])
    assert [i.name for i in infos] == ["detail0", "detail1", "detail2"]
    assert all(i.extra["uuid"] for i in infos)


def test_a_clone_that_times_out_leaves_nothing(pve_host: Host, make: Callable[..., VM], pve: FakePve,
                                               fake: InProcessFakePve, shared_storage: str) -> None:
    import time


    src = pve_host.vms.create(VMSpec(name="slowsrc", memory_mib=64, node="pve1",
                                     disks=[DiskSpec(size_gib=0.0625, storage=shared_storage)]))
    make.track(src)  # type: ignore[attr-defined]
    fake.sync(lambda: pve.ceph_slow(20))
    pve.time_scale = 0.05  # the clone's disk copy takes 1 s
    try:
        with pytest.raises(anyvirt.Timeout):
            src.clone("slowcopy", timeout=0.3)
        deadline = time.monotonic() + 15
        while [v for v in pve.vms if v.name == "slowcopy"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [v for v in pve.vms if v.name == "slowcopy"], "the half-made clone was removed"
        owners = {vol.get("vmid") for vol in pve.storages[shared_storage].get("volumes", {}).values()}
        assert owners == {int(src.id)}, "and its disks"
    finally:
        pve.time_scale = 0
        fake.sync(lambda: pve.ceph_recover())
