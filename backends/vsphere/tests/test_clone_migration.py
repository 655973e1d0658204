"""Clones (placement, linked, bulk), templates, relocation and evacuation on a simulated vCenter.

What vcsim 0.24.2 honours when cloning: the resource pool, the datastore and
the folder. It keeps the clone on the source VM's host whatever
``location.host`` says (the backend then relocates it to the node asked
for), and copies disks in full even for a linked clone; the tests assert
what the simulator really does and no more.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyvirt_vsphere.clone import LINKED_BASE_SNAPSHOT
from anyvirt_vsphere.driver import VSphereExtensions
from anyvirt_vsphere.testbed.vcsim import Vcsim
from vsphere_support import vsphere_driver

import anyvirt
from anyvirt.errors import InvalidSpec, InvalidState, NotSupported
from anyvirt.host import Host
from anyvirt.model import DiskSpec, NicSpec, PowerState, VMSpec
from anyvirt.rules import least_loaded
from anyvirt.testing.suite.spy import recording


@pytest.fixture(scope="module")
def roomy_vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    """A private vCenter with two datastores, so placement and evacuation do not disturb others."""
    with Vcsim(datastores=2, vms=1, workdir=tmp_path_factory.mktemp("vcsim-roomy")) as sim:
        yield sim


@pytest.fixture
def host(roomy_vcsim: Vcsim) -> Iterator[Host]:
    with anyvirt.connect(roomy_vcsim.anyvirt_uri_with_ca, password=roomy_vcsim.password) as h:
        yield h


def _spec(name: str, node: str | None = "DC0_C0_H0") -> VMSpec:
    return VMSpec(name=name, memory_mib=64, disks=[DiskSpec(size_gib=0.0625)], nics=[NicSpec()], node=node)


def test_clone_lands_in_the_folder_and_datastore_asked(host: Host) -> None:
    vm = host.vms.create(_spec("placed-src"))
    ext = host.extension(VSphereExtensions)
    assert ext.create_folder("clones/web") == "clones/web"  # escaped: one folder, not two
    clone = vm.clone("placed", storage="LocalDS_1", folder="clones/web")
    assert clone.native.parent.name == "clones%2fweb"
    assert [d.storage for d in clone.info().disks] == ["LocalDS_1"]
    assert clone.info().disks[0].path.startswith("[LocalDS_1] placed/")
    assert {m.mac for m in clone.info().nics}.isdisjoint({m.mac for m in vm.info().nics})
    clone.delete()
    vm.delete()


def test_placement_the_backend_does_not_take_is_refused_before_anything(host: Host) -> None:
    vm = host.vms.create(_spec("pool-src"))
    with recording(host) as calls, pytest.raises(InvalidSpec, match="no pool placement"):
        vm.clone("pooled", pool="Resources")
    assert calls == []
    vm.delete()


def test_extension_calls_pass_the_gate(host: Host) -> None:
    task = host.extension(VSphereExtensions).create_folder("via-task", wait=False)
    assert task.wait(60) == "via-task"
    with pytest.raises(InvalidSpec):
        host.extension(VSphereExtensions).create_folder("")


def test_clone_to_a_node_gets_that_nodes_pool(host: Host) -> None:
    driver = vsphere_driver(host)
    vm = host.vms.create(_spec("to-node-src"))
    clone = vm.clone("to-node", node="DC0_H0")
    pool = driver.inventory.resource_pool(driver.inventory.host("DC0_H0"))
    assert clone.native.resourcePool == pool
    # vcsim keeps the clone on the source's host; the backend then moves it where it was asked
    assert clone.node == driver.inventory.host("DC0_H0").node.id != vm.node
    assert [v.node for v in host.vms.list() if v.id == clone.id] == [clone.node]
    clone.delete()
    vm.delete()


def test_linked_clone_uses_the_current_snapshot_or_makes_one(host: Host) -> None:
    vm = host.vms.create(_spec("linked-src"))
    first = vm.clone("linked-1", linked=True)
    assert [s.name for s in vm.snapshots.list()] == [LINKED_BASE_SNAPSHOT]
    vm.snapshots.create("golden")
    second = vm.clone("linked-2", linked=True)
    assert [s.name for s in vm.snapshots.list()] == [LINKED_BASE_SNAPSHOT, "golden"]
    for clone in (first, second):
        assert clone.info().disks and clone.state is PowerState.STOPPED
        clone.delete()
    vm.delete()


def test_clone_name_too_long_for_vsphere_is_refused_before_anything(host: Host) -> None:
    vm = host.vms.create(_spec("long-name-src"))
    with pytest.raises(InvalidSpec, match="as vSphere stores it"):
        vm.clone("%" * 30, linked=True)
    assert vm.snapshots.list() == []  # not even the linked clones' base snapshot
    assert [v.name for v in host.vms.list() if v.name.startswith("%")] == []
    vm.delete()


def test_bulk_clone(host: Host) -> None:
    vm = host.vms.create(_spec("bulk-src"))
    made = vm.clone("bulk", count=3, storage="LocalDS_1")
    assert [c.name for c in made] == ["bulk-1", "bulk-2", "bulk-3"]
    assert len({c.id for c in made} | {vm.id}) == 4
    assert {d.storage for c in made for d in c.info().disks} == {"LocalDS_1"}
    for c in made:
        c.delete()
    vm.delete()


def test_template_then_deploy(host: Host) -> None:
    driver = vsphere_driver(host)
    vm = host.vms.create(_spec("tmpl"))
    vm.mark_template()
    assert host.vms.get(vm.id).template is True
    with pytest.raises(InvalidState):
        vm.start()
    deployed = vm.clone("from-tmpl", node="DC0_C0_H1")
    assert deployed.template is False and deployed.cpus == vm.cpus
    assert deployed.node == driver.inventory.host("DC0_C0_H1").node.id
    deployed.delete()
    # a moved template (evacuation moves templates too) stays a template and deploys
    vm.migrate(to=host.nodes.get("DC0_C0_H2"))
    assert [(v.template, v.node) for v in host.vms.list() if v.id == vm.id] == [
        (True, driver.inventory.host("DC0_C0_H2").node.id)
    ]
    again = vm.clone("from-moved-tmpl")
    assert again.template is False
    again.delete()
    vm.convert_to_vm(node="DC0_C0_H0")
    assert host.vms.get(vm.id).template is False and vm.template is False
    vm.delete()


def test_relocate_moves_the_vm_and_the_listing_shows_it(host: Host) -> None:
    vm = host.vms.create(_spec("mover"))
    target = host.nodes.get("DC0_C0_H2")
    result = vm.migrate(to=target, live=False)
    assert result.source != result.target == target.id and result.live is False
    assert {v.id: v.node for v in host.vms.list()}[vm.id] == target.id
    vm.start()
    live = vm.migrate(to=host.nodes.get("DC0_C0_H0"))
    assert live.live is True
    assert host.vms.get(vm.id).node == host.nodes.get("DC0_C0_H0").id
    vm.stop(force=True)
    vm.delete()


def test_storage_vmotion(host: Host) -> None:
    vm = host.vms.create(_spec("storage-mover"))
    vm.migrate(to=host.nodes.get(vm.node), storage="LocalDS_1")
    assert [ds.name for ds in vm.native.datastore] == ["LocalDS_1"]
    vm.delete()


def test_evacuate_with_maintenance(host: Host) -> None:
    source = host.nodes.get("DC0_C0_H1")
    made = [host.vms.create(_spec(f"evac-{i}", node=source.name)) for i in range(3)]
    on_source = [v for v in host.vms.list() if v.node == source.id]
    assert len(on_source) >= 3
    results = host.evacuate(source, to=[host.nodes.get("DC0_C0_H2")], maintenance=True)
    assert len(results) == len(on_source)
    assert not [v for v in host.vms.list() if v.node == source.id]
    assert host.nodes.get(source.id).state == "maintenance"
    host.nodes.get(source.id).set_maintenance(False)
    assert host.nodes.get(source.id).state == "online"
    for vm in made:
        vm.delete()


def test_a_move_to_another_vcenter_is_refused_before_anything_is_sent(
        host: Host, vcsim_esx: Vcsim) -> None:
    """The gate asks ``can_reach``: another vCenter (here an ESXi at another port of the
    same address) is not, refused with the error type every backend uses."""
    vm = host.vms.create(_spec("stay-home"))
    try:
        with anyvirt.connect(vcsim_esx.anyvirt_uri_with_ca, password=vcsim_esx.password) as esx:
            before = {v.id for v in esx.vms.list()}
            with recording(host) as calls, pytest.raises(NotSupported, match="cannot move a VM to"):
                vm.migrate(to=esx, live=False)
            assert calls == [] and {v.id for v in esx.vms.list()} == before
    finally:
        vm.delete()


def test_the_gate_names_the_least_loaded_host(host: Host) -> None:
    """vSphere without DRS does not schedule (``schedules_vms`` is False): a VM with no node
    named goes to the host the gate picks, the one with the least memory given out."""
    made = host.vms.create(_spec("load-h0", node="DC0_C0_H0"))
    expected = least_loaded([n.info for n in host.nodes.list()],
                            [(v.node or "", v.memory_mib) for v in host.vms.list()]).id
    sent: list[str | None] = []
    driver = host.driver
    original = driver.create_vm

    def create_vm(spec: VMSpec, job: Any) -> Any:
        sent.append(spec.node)
        return original(spec, job)

    driver.create_vm = create_vm  # type: ignore[method-assign]
    try:
        placed = host.vms.create(_spec("placed", node=None))
    finally:
        del driver.create_vm
    try:
        assert sent == [expected] and placed.node == expected
    finally:
        placed.delete()
        made.delete()


def test_esx_cannot_clone_or_move(vcsim_esx: Vcsim, tmp_path: Path) -> None:
    with anyvirt.connect(vcsim_esx.anyvirt_uri_with_ca, password=vcsim_esx.password) as esx:
        vm = esx.vms.list()[0]
        with pytest.raises(NotSupported):
            vm.clone("nope")
        with recording(esx) as calls:
            with pytest.raises(NotSupported, match="connect to its vCenter"):
                vm.clone("a", count=2)
            with pytest.raises(NotSupported):
                vm.migrate(to=esx.nodes.list()[0], storage="LocalDS_0")
        assert calls == []
