"""Nodes, datastores, listings through the PropertyCollector, names that need escaping."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from anyvirt_vsphere.driver import VSphereDriver
from anyvirt_vsphere.inventory import escape_name, inventory_path, unescape_name
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt
from anyvirt.errors import InvalidSpec
from anyvirt.host import Host
from anyvirt.model import VMSpec


@contextmanager
def count_requests() -> Iterator[list[str]]:
    """Record every HTTP request sent (SOAP calls and anything else), with its path."""
    calls: list[str] = []
    original = http.client.HTTPConnection.request

    def counting(self: http.client.HTTPConnection, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        calls.append(f"{method} {url}")
        original(self, method, url, *args, **kwargs)

    http.client.HTTPConnection.request = counting  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        http.client.HTTPConnection.request = original  # type: ignore[method-assign]


def test_vcenter_nodes_have_cluster_state_and_capacity(vcenter_host: Host) -> None:
    nodes = vcenter_host.nodes.list()
    assert len(nodes) == 4  # three in cluster DC0_C0, one standalone
    by_name = {n.name: n for n in nodes}
    assert by_name["DC0_C0_H0"].info.cluster == "DC0_C0"
    assert by_name["DC0_H0"].info.cluster is None
    for node in nodes:
        info = node.info
        assert info.id.startswith("host-")
        assert info.state == "online" and info.maintenance is False
        assert info.cpus > 0 and info.memory_mib > 0
        assert info.free_memory_mib is not None and 0 <= info.free_memory_mib <= info.memory_mib


def test_esx_has_one_node(esx_host: Host) -> None:
    nodes = esx_host.nodes.list()
    assert [n.id for n in nodes] == ["ha-host"]
    assert esx_host.info().hypervisor == "ESXi"


def test_host_info_has_datastores_with_capacity(vsphere_host: Host) -> None:
    info = vsphere_host.info()
    assert info.storage, "datastores are listed"
    for ds in info.storage:
        assert ds.capacity_bytes > 0
        assert 0 < ds.available_bytes <= ds.capacity_bytes
    assert info.cpus == sum(n.info.cpus for n in vsphere_host.nodes.list())
    assert info.networks


def test_vm_node_says_where_it_runs(vsphere_host: Host) -> None:
    node_ids = {n.id for n in vsphere_host.nodes.list()}
    vms = vsphere_host.vms.list()
    assert vms
    for vm in vms:
        assert vm.node in node_ids


def test_listing_costs_the_same_round_trips_for_more_vms(
    vsphere_host: Host, spec_for: Callable[[str], VMSpec]
) -> None:
    vsphere_host.vms.list()  # warm: the container view is made once per session
    with count_requests() as few:
        small = vsphere_host.vms.list()
    made = [vsphere_host.vms.create(spec_for(f"rt-{i}")) for i in range(5)]
    try:
        with count_requests() as many:
            large = vsphere_host.vms.list()
        assert len(large) == len(small) + 5
        assert few == many == ["POST /sdk"]  # one RetrievePropertiesEx, whatever the count
    finally:
        for vm in made:
            vm.delete()


def test_a_vanished_vm_is_skipped(vsphere_host: Host, spec_for: Callable[[str], VMSpec]) -> None:
    """Objects gone between enumeration and the property read are left out, not an error."""
    keep = vsphere_host.vms.create(spec_for("vanish-keep"))
    gone = vsphere_host.vms.create(spec_for("vanish-gone"))
    driver = vsphere_host.driver
    assert isinstance(driver, VSphereDriver)
    refs = [driver.inventory.vm_ref(keep.id), driver.inventory.vm_ref(gone.id)]
    gone.delete()
    rows = driver.collector.objects(refs, {vim.VirtualMachine: ("name",)})
    assert [r.get("name") for r in rows] == ["vanish-keep"]
    keep.delete()


WEIRD_NAMES = ["a/b", "100% sure", 'say "hi"', "it's", "back\\slash", "Grüße 名前 ✓"]


@pytest.mark.parametrize("name", WEIRD_NAMES)
def test_names_are_escaped_as_vsphere_requires(
    vsphere_host: Host, spec_for: Callable[[str], VMSpec], name: str
) -> None:
    vm = vsphere_host.vms.create(spec_for(name))
    try:
        assert vm.name == name
        assert vsphere_host.vms.get(name).id == vm.id
        assert vm.info().name == name
        stored = vm.native.name  # what vSphere holds: %, / and \ escaped
        assert stored == escape_name(name)
        assert "/" not in stored and "\\" not in stored
    finally:
        vm.delete()


def test_escaping_round_trips() -> None:
    for name in WEIRD_NAMES:
        assert unescape_name(escape_name(name)) == name
    assert escape_name("a/b%c\\d") == "a%2fb%25c%5cd"
    assert inventory_path("DC0", "vm", "a/b") == "DC0/vm/a%2fb"


def test_names_vsphere_cannot_hold_are_refused(vsphere_host: Host) -> None:
    count = len(vsphere_host.vms.list())
    for bad in ["tab\there", "x" * 81, " padded"]:
        with pytest.raises(InvalidSpec):
            vsphere_host.vms.create(VMSpec(name=bad))
    # within anyvirt's 80 characters, but 84 once '/' and '%' are escaped
    with pytest.raises(InvalidSpec, match="84 characters as vSphere stores it"):
        vsphere_host.vms.create(VMSpec(name="a/b%" + "x" * 76))
    fits = vsphere_host.vms.create(VMSpec(name="a/" + "x" * 76, memory_mib=64))  # 80 stored
    try:
        assert fits.native.name == "a%2f" + "x" * 76
    finally:
        fits.delete()
    assert len(vsphere_host.vms.list()) == count


def test_datacenter_option_scopes_and_checks(vcsim_vcenter: Vcsim) -> None:
    uri = vcsim_vcenter.anyvirt_uri_with_ca
    with anyvirt.connect(uri + "&datacenter=DC0", password=vcsim_vcenter.password) as host:
        assert host.vms.list()
    with pytest.raises(anyvirt.NotFound):
        anyvirt.connect(uri + "&datacenter=nope", password=vcsim_vcenter.password)
    with pytest.raises(anyvirt.NotFound, match="no cluster named 'nope' \\(clusters: DC0_C0\\)"):
        anyvirt.connect(uri + "&cluster=nope", password=vcsim_vcenter.password)
    with anyvirt.connect(uri + "&cluster=DC0_C0", password=vcsim_vcenter.password) as host:
        assert {n.info.cluster for n in host.nodes.list()} == {"DC0_C0"}
        assert all(vm.node != "host-21" for vm in host.vms.list())


def test_fast_reader_and_pyvmomi_read_the_same(vsphere_host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ElementTree reader of listings agrees with pyVmomi's own parser, row for row."""
    from anyvirt_vsphere import fastxml

    driver = vsphere_host.driver
    assert isinstance(driver, VSphereDriver)
    fast_vms = driver.list_vms()
    fast_nodes = driver.list_nodes()
    fast_storage = driver.inventory.storage_info()
    monkeypatch.setattr(fastxml, "retrieve", lambda *args: None)  # force pyVmomi's path
    assert driver.list_vms() == fast_vms
    assert driver.list_nodes() == fast_nodes
    assert driver.inventory.storage_info() == fast_storage
