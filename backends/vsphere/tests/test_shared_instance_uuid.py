"""A VM given another VM's instance UUID never makes anyvirt act on that other VM.

``config.instanceUuid`` is anyvirt's id for a vSphere VM, and whoever may reconfigure a
VM can set it (``ConfigSpec.instanceUuid``), to another VM's. ``SearchIndex.FindByUuid``
then answers with the first of the two: on main, deleting "evil" deleted the victim.
Two VMs with one id are now refused (InvalidState) and both are left as they are.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from anyvirt_vsphere.driver import VSphereDriver
from anyvirt_vsphere.sdk import vim

from anyvirt.errors import InvalidState
from anyvirt.host import Host
from anyvirt.model import VMSpec


def _set_instance_uuid(ref: Any, value: str) -> None:
    """What any client with reconfigure rights can do, through pyVmomi itself."""
    task = ref.ReconfigVM_Task(vim.vm.ConfigSpec(instanceUuid=value))
    for _ in range(200):
        if task.info.state in ("success", "error"):
            break
        time.sleep(0.05)
    assert task.info.state == "success"


def test_a_shared_instance_uuid_is_refused_not_resolved_to_the_first(vsphere_host: Host) -> None:
    driver = vsphere_host.driver
    assert isinstance(driver, VSphereDriver)
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    victim = vsphere_host.vms.create(VMSpec(name="uuid-victim", node=node))
    evil = vsphere_host.vms.create(VMSpec(name="uuid-evil", node=node))
    evil_ref = driver.inventory.vm_ref(evil.id)
    try:
        _set_instance_uuid(evil_ref, victim.id)
        claimed = vsphere_host.vms.get("uuid-evil")
        assert claimed.id == victim.id  # the platform says so: the listing is data
        with pytest.raises(InvalidState, match="hold the id"):
            claimed.delete(disks=True)
        with pytest.raises(InvalidState, match="hold the id"):
            victim.delete(disks=True)
        names = sorted(vm.name for vm in vsphere_host.vms.list() if vm.id == victim.id)
        assert names == ["uuid-evil", "uuid-victim"]  # both still there
    finally:
        _set_instance_uuid(evil_ref, str(uuid.uuid4()))
        for name in ("uuid-evil", "uuid-victim"):
            vsphere_host.vms.get(name).delete(disks=True)
