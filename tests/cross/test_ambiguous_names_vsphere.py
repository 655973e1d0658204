"""Two VMs of one name on a real vSphere API (vcsim): vCenter allows it in different
folders. A lookup by that name is refused, naming both ids, never resolved to the first in
listing order; each is still found by its id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from anyvirt_vsphere.driver import VSphereDriver
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt
from anyvirt.errors import AmbiguousName, NotFound
from anyvirt.host import Host
from anyvirt.model import VMSpec


@pytest.fixture
def vc(vcsim_vcenter: Vcsim) -> Iterator[Host]:
    with anyvirt.connect(vcsim_vcenter.anyvirt_uri, password=vcsim_vcenter.password) as host:
        yield host


def _wait(task: Any) -> None:
    for _ in range(200):
        if task.info.state in ("success", "error"):
            break
        time.sleep(0.05)
    assert task.info.state == "success", task.info.error


def test_a_name_two_vms_carry_in_different_folders_is_refused(vc: Host) -> None:
    driver = vc.driver
    assert isinstance(driver, VSphereDriver)
    node = "DC0_C0_H0" if len(vc.nodes.list()) > 1 else None
    first = vc.vms.create(VMSpec(name="twin", node=node))
    second = vc.vms.create(VMSpec(name="twin-other", node=node))
    try:
        # what any vSphere client may do, with plain pyVmomi: another folder, the same name
        ref = driver.inventory.vm_ref(second.id)
        datacenter = ref.parent
        while not isinstance(datacenter, vim.Datacenter):
            datacenter = datacenter.parent
        folder = datacenter.vmFolder.CreateFolder(f"elsewhere-{second.id[:8]}")
        _wait(folder.MoveIntoFolder_Task([ref]))
        _wait(ref.Rename_Task("twin"))
        assert sorted(vm.name for vm in vc.vms.list() if vm.name == "twin") == ["twin", "twin"]

        with pytest.raises(AmbiguousName) as ambiguous:
            vc.vms.get("twin")
        assert set(ambiguous.value.ids) == {first.id, second.id}
        assert isinstance(ambiguous.value, NotFound)
        assert vc.vms.exists("twin")
        assert vc.vms.get(first.id).id == first.id and vc.vms.get(second.id).id == second.id
    finally:
        for made in (first, second):
            vc.vms.get(made.id).delete(disks=True)
