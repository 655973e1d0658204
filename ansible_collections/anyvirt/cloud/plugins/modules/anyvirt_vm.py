#!/usr/bin/python
# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: anyvirt_vm
short_description: A VM on any platform anyvirt reaches, present, started, stopped, restarted or absent
version_added: "0.1.0"
description:
  - Creates, powers and deletes one VM through anyvirt, the same way on libvirt/KVM, vSphere, Proxmox VE and
    VirtualBox.
  - A VM that exists is matched by name (or id). Its CPUs and memory are changed when they differ from O(cpus) and
    O(memory_mib); O(disks), O(nics) and O(identity) are used only when the VM is created.
  - A second run with the same options reports no change, except O(state=restarted), which restarts every time.
extends_documentation_fragment:
  - anyvirt.cloud.connection
  - anyvirt.cloud.identity
attributes:
  check_mode:
    description: Reports what would change and changes nothing.
    support: full
  diff_mode:
    description: Shows the VM's state, CPUs and memory before and after.
    support: full
options:
  name:
    description: The VM's name (or its id, for a VM that exists).
    type: str
    required: true
  state:
    description:
      - V(present) makes the VM exist (new VMs are stopped); V(started) and V(stopped) also set its power;
        V(restarted) reboots a running VM or starts a stopped one; V(absent) deletes it with its disks.
    type: str
    choices: [present, started, stopped, restarted, absent]
    default: present
  cpus:
    description: Virtual CPUs.
    type: int
  memory_mib:
    description: Memory in MiB.
    type: int
  disks:
    description: The disks of a new VM, in order.
    type: list
    elements: dict
    default: []
    suboptions:
      size_gib:
        description: An empty disk of this size.
        type: float
      image:
        description: A disk made from this existing image file, copied into the host's storage.
        type: str
      format:
        description:
          - The format of O(disks[].image), read as that and never probed. Without it the format is
            found from the image's first bytes.
          - Give V(raw) for a raw disk, whose guest may have written anything at its start, a qcow2 or
            VMDK header included; probed, such a disk would be imported as that inner image.
          - Only with O(disks[].image).
        type: str
        choices: [raw, qcow2, vmdk, vdi, vpc, vhdx]
      bus:
        description: The disk's bus where the platform offers a choice (virtio, scsi, sata, ide).
        type: str
      storage:
        description: The pool or datastore to put it in.
        type: str
  nics:
    description: The NICs of a new VM, in order.
    type: list
    elements: dict
    default: []
    suboptions:
      network:
        description: The network (libvirt network, port group, bridge) the NIC joins.
        type: str
      model:
        description: The NIC model (virtio, e1000, vmxnet3).
        type: str
      mac:
        description: A fixed MAC address.
        type: str
  node:
    description: The node (hypervisor of a cluster) to create the VM on.
    type: str
  description:
    description: A free-text note stored with a new VM.
    type: str
  guest_os:
    description: The guest operating system hint of a new VM.
    type: str
  firmware:
    description: The firmware of a new VM.
    type: str
    choices: [bios, efi]
  force:
    description: Stop by powering off rather than by an ACPI shutdown.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for each operation.
    type: float
    default: 300
author:
  - anyvirt contributors (@anyvirt)
"""

EXAMPLES = r"""
- name: A small VM, running
  anyvirt.cloud.anyvirt_vm:
    uri: libvirt+qemu:///system
    name: web1
    state: started
    cpus: 2
    memory_mib: 2048
    disks:
      - size_gib: 10
      - image: /srv/images/data.raw
        format: raw
    nics:
      - network: default
    identity:
      users:
        - name: ops
          ssh_keys: ["ssh-ed25519 AAAA... ops@laptop"]
          sudo: true

- name: Gone, with its disks
  anyvirt.cloud.anyvirt_vm:
    uri: proxmox://root%40pam@pve1:8006
    password: "{{ vault_pve_password }}"
    name: web1
    state: absent
"""

RETURN = r"""
vm:
  description: The VM as anyvirt lists it after the task (empty when it is absent).
  returned: always
  type: dict
  sample: {"id": "8d1f...", "name": "web1", "state": "running", "cpus": 2, "memory_mib": 2048,
           "node": "kvm1", "template": false}
actions:
  description: What the task did (or, in check mode, would do), in order.
  returned: always
  type: list
  elements: str
  sample: ["create", "start"]
"""

from typing import Any

from ansible_collections.anyvirt.cloud.plugins.module_utils.anyvirt_common import (
    IDENTITY_ARG,
    IMAGE_FORMATS,
    anyvirt_task,
    find_vm,
    record_change,
    spec_from_params,
    vm_facts,
)

OPTIONS = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "present", "choices": ["present", "started", "stopped", "restarted", "absent"]},
    "cpus": {"type": "int"},
    "memory_mib": {"type": "int"},
    "disks": {"type": "list", "elements": "dict", "default": [], "options": {
        "size_gib": {"type": "float"}, "image": {"type": "str"}, "format": {"type": "str", "choices": IMAGE_FORMATS},
        "bus": {"type": "str"}, "storage": {"type": "str"}}},
    "nics": {"type": "list", "elements": "dict", "default": [], "options": {
        "network": {"type": "str"}, "model": {"type": "str"}, "mac": {"type": "str"}}},
    "identity": IDENTITY_ARG,
    "node": {"type": "str"},
    "description": {"type": "str"},
    "guest_os": {"type": "str"},
    "firmware": {"type": "str", "choices": ["bios", "efi"]},
    "force": {"type": "bool", "default": False},
    "wait_timeout": {"type": "float", "default": 300},
}

RUNNING_STATES = ("running", "paused")


def plan(vm: Any, params: dict[str, Any]) -> list[str]:
    """What must change, decided before anything is done (so check mode tells the truth)."""
    state = params["state"]
    if state == "absent":
        return ["delete"] if vm is not None else []
    actions = []
    power = vm.state.value if vm is not None else "stopped"
    if vm is None:
        actions.append("create")
    elif ((params["cpus"] is not None and params["cpus"] != vm.cpus)
          or (params["memory_mib"] is not None and params["memory_mib"] != vm.memory_mib)):
        actions.append("reconfigure")
    if state == "started" and power != "running":
        actions.append("resume" if power == "paused" else "start")
    elif state == "stopped" and power in RUNNING_STATES:
        actions.append("stop")
    elif state == "restarted":
        actions.append("reboot" if power == "running" else "start")
    return actions


def snapshot_of(vm: Any) -> dict[str, Any]:
    return vm_facts(vm) if vm is not None else {}


def diff_view(facts: dict[str, Any]) -> dict[str, Any]:
    if not facts:
        return {"state": "absent"}
    return {key: facts[key] for key in ("state", "cpus", "memory_mib")}


def predicted(before: dict[str, Any], actions: list[str], params: dict[str, Any]) -> dict[str, Any]:
    """The VM as it will be after ``actions``, for check mode's diff."""
    if "delete" in actions:
        return {}
    after = dict(before) or {"name": params["name"], "state": "stopped", "cpus": params["cpus"] or 1,
                             "memory_mib": params["memory_mib"] or 512}
    for key in ("cpus", "memory_mib"):
        if params[key] is not None:
            after[key] = params[key]
    if any(a in actions for a in ("start", "resume", "reboot")):
        after["state"] = "running"
    if "stop" in actions:
        after["state"] = "stopped"
    return after


def apply(host: Any, vm: Any, actions: list[str], params: dict[str, Any]) -> Any:
    timeout = params["wait_timeout"]
    for action in actions:
        if action == "delete":
            if vm.state.value in RUNNING_STATES:
                vm.stop(force=True, timeout=timeout)
            vm.delete(disks=True, timeout=timeout)
            return None
        if action == "create":
            vm = host.vms.create(spec_from_params(params), timeout=timeout)
        elif action == "reconfigure":
            vm.reconfigure(cpus=params["cpus"], memory_mib=params["memory_mib"], timeout=timeout)
        elif action == "start":
            vm.start(timeout=timeout)
        elif action == "resume":
            vm.resume(timeout=timeout)
        elif action == "stop":
            vm.stop(force=params["force"], timeout=timeout)
        elif action == "reboot":
            vm.reboot(timeout=timeout)
    return vm.refresh()


def main() -> None:
    result: dict[str, Any] = {"changed": False, "vm": {}, "actions": []}
    with anyvirt_task(OPTIONS, result) as (module, host):
        params = module.params
        vm = find_vm(host, params["name"])
        if vm is None and params["state"] != "absent":
            spec_from_params(params)  # a bad spec fails here, in check mode too
        actions = plan(vm, params)
        before = snapshot_of(vm)
        result["actions"] = actions
        if module.check_mode:
            after = predicted(before, actions, params)
        else:
            after = snapshot_of(apply(host, vm, actions, params) if actions else vm)
        result["vm"] = after
        # recorded once done: the diff shows the VM as the platform reports it after the change
        record_change(module, result, bool(actions), diff_view(before), diff_view(after))


if __name__ == "__main__":
    main()
