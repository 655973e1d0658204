"""``ProxmoxExtensions``: what PVE does its own way, through the gate.

PVE templates are one-way (no API turns one back into a VM) and linked
clones are made only of templates. anyvirt's ``TEMPLATES`` capability
includes ``convert_to_vm`` and ``LINKED_CLONE`` means a linked clone of any
VM, so a PVE connection declares neither; these two operations are offered
here instead, each with the gate's one-change-at-a-time hold on the VM,
its deadline and a Task::

    ext = host.extension(ProxmoxExtensions)
    ext.mark_template(vm)                      # one way: the VM can only be cloned now
    web = ext.linked_clone(vm, "web-1")        # copy-on-write from the template's base disks
"""

from __future__ import annotations

from typing import Any

from anyvirt.errors import AlreadyExists, InvalidState
from anyvirt.extensions import Extension
from anyvirt.model import Capability, Placement, PowerState, check_name
from anyvirt.tasks import Job
from anyvirt.vm import VM

STOPPED = frozenset({PowerState.STOPPED})


class ProxmoxExtensions(Extension):
    """Proxmox VE's own operations (``host.extension(ProxmoxExtensions)``)."""

    def mark_template(self, vm: VM, *, wait: bool = True, timeout: float | None = 600.0) -> Any:
        """Make the stopped ``vm`` a template, for good (PVE cannot turn it back). Returns the VM."""
        driver = self.host.driver

        def work(job: Job) -> VM:
            if vm.template:
                raise InvalidState(f"VM {vm.name!r} is a template already")
            vm._summary = driver.mark_template(vm.id, job)
            return vm

        return self._through_gate(f"mark {vm.name} as a template", work, vm=vm, states=STOPPED,
                                  capability=Capability.FULL_CLONE, wait=wait, timeout=timeout)

    def linked_clone(self, template: VM, name: str, *, node: str | None = None, wait: bool = True,
                     timeout: float | None = 600.0) -> Any:
        """A new VM ``name`` whose disks are copy-on-write over ``template``'s base disks."""
        check_name(name, "clone name")
        driver = self.host.driver
        driver.check_vm_name(name, "clone name")
        if self.host.vms.exists(name):
            raise AlreadyExists(f"a VM named {name!r} exists already on {self.host.uri}")
        node_id = self.host.nodes.get(node).id if node is not None else None

        def work(job: Job) -> VM:
            if not template.template:
                raise InvalidState(f"Proxmox VE makes linked clones only of templates; {template.name!r} "
                                   "is not one (mark_template() it first, or make a full clone)")
            reservation = self.host.reserve_capacity(template.cpus, template.memory_mib)
            try:
                return VM(self.host, driver.clone_vm(template.id, name, True, Placement(node=node_id), job))
            finally:
                reservation.release()

        return self._through_gate(f"linked clone of {template.name} as {name}", work, vm=template,
                                  capability=Capability.FULL_CLONE, wait=wait, timeout=timeout)
