"""Proxmox allows two VMs of one name, and its driver finds a VM by name itself: the core
holds that lookup to the same rule (a name two VMs carry is refused, naming both ids)."""

from __future__ import annotations

import pytest
from anyvirt_proxmox.testbed.fakepve import FakePveTestbed

import anyvirt
from anyvirt.errors import AmbiguousName
from anyvirt.model import VMSpec


def test_a_name_two_proxmox_vms_carry_is_refused(proxmox_testbed: FakePveTestbed) -> None:
    with anyvirt.connect(proxmox_testbed.uri, password=proxmox_testbed.password) as host:
        first = host.vms.create(VMSpec(name="pve-twin"))
        second = host.vms.create(VMSpec(name="pve-twin-b"))
        try:
            # what any Proxmox client may do: give a VM a name another has
            host.driver.native_vm(second.id).config.put(name="pve-twin")
            assert [vm.id for vm in host.vms.list() if vm.name == "pve-twin"] != [first.id]
            with pytest.raises(AmbiguousName) as ambiguous:
                host.vms.get("pve-twin")
            assert set(ambiguous.value.ids) == {first.id, second.id}
            assert host.vms.get(second.id).name == "pve-twin"
        finally:
            for made in (first, second):
                host.vms.get(made.id).delete(disks=True)
