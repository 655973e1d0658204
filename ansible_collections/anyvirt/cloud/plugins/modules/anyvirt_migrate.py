#!/usr/bin/python
# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: anyvirt_migrate
short_description: A VM moved to another node, another host, or another platform
version_added: "0.1.0"
description:
  - With O(to_node), moves the VM to another node of the same cluster (live where the platform can).
  - With O(to_uri) of the same backend, moves it to that host. With O(to_uri) of another backend, moves it across
    platforms through anyvirt's neutral hardware description, and converts its disks.
  - Nothing is done when the VM is already where it should be. That is the node for O(to_node), or a VM named
    O(target_name) (by default O(name)) on the target host for O(to_uri). A second run reports no change.
extends_documentation_fragment:
  - anyvirt.cloud.connection
attributes:
  check_mode:
    description: Reports whether the VM would move and moves nothing.
    support: full
  diff_mode:
    description: Shows where the VM is before and after.
    support: full
options:
  name:
    description: The VM to move (name or id).
    type: str
    required: true
  to_node:
    description: A node (name or id) of the same connection to move the VM to.
    type: str
  to_uri:
    description: The anyvirt URI of the target host, of the same or another platform.
    type: str
  to_password:
    description: The target's password. It is never logged.
    type: str
  to_token:
    description: The target's API token. It is never logged.
    type: str
  to_verify:
    description: Verify the target's TLS certificate.
    type: bool
  to_ca:
    description: A CA bundle to trust for the target's certificate.
    type: path
  to_timeout:
    description: Seconds that bound every call to the target.
    type: float
  live:
    description: Move a running VM live (within a platform). By default live for a running VM.
    type: bool
  storage:
    description: Move the disks to this pool or datastore too (within a platform).
    type: str
  target_name:
    description: Across platforms, the VM's name on the target.
    type: str
  shutdown:
    description: Across platforms, shut a running VM down first (it is refused otherwise).
    type: bool
    default: false
  delete_source:
    description: Across platforms, delete the source VM once the copy is verified.
    type: bool
    default: false
  start:
    description: Across platforms, start the VM on the target. By default as it was running before.
    type: bool
  networks:
    description: Across platforms, maps the source's networks to the target's (C({"*":"default"})).
    type: dict
  wait_timeout:
    description: Seconds to wait for the move.
    type: float
    default: 3600
author:
  - anyvirt contributors (@anyvirt)
"""

EXAMPLES = r"""
- name: web1 off the node going into maintenance
  anyvirt.cloud.anyvirt_migrate:
    uri: proxmox://root%40pam@pve1:8006
    password: "{{ vault_pve_password }}"
    name: web1
    to_node: pve2

- name: web1 from VirtualBox to KVM
  anyvirt.cloud.anyvirt_migrate:
    uri: virtualbox://
    name: web1
    to_uri: libvirt+qemu:///system
    shutdown: true
    delete_source: true
    networks: {"*": "default"}
"""

RETURN = r"""
vm:
  description: The VM where it is after the task.
  returned: always
  type: dict
result:
  description: anyvirt's MigrationResult (when the VM moved), with its duration, downtime and warnings.
  returned: when the VM moved
  type: dict
  sample: {"source": "pve1", "target": "pve2", "live": true, "duration_s": 2.1, "downtime_ms": 31.0,
           "warnings": []}
"""

from typing import Any

from ansible_collections.anyvirt.cloud.plugins.module_utils.anyvirt_common import (
    anyvirt,
    anyvirt_task,
    connect,
    find_vm,
    record_change,
    target_connection_args,
    vm_facts,
)

OPTIONS = {
    "name": {"type": "str", "required": True},
    "to_node": {"type": "str"},
    "live": {"type": "bool"},
    "storage": {"type": "str"},
    "target_name": {"type": "str"},
    "shutdown": {"type": "bool", "default": False},
    "delete_source": {"type": "bool", "default": False},
    "start": {"type": "bool"},
    "networks": {"type": "dict"},
    "wait_timeout": {"type": "float", "default": 3600},
    **target_connection_args("to_"),
}


def migration_facts(result: Any) -> dict[str, Any]:
    return {"vm_id": result.vm_id, "vm_name": result.vm_name, "source": result.source, "target": result.target,
            "live": result.live, "duration_s": result.duration_s, "downtime_ms": result.downtime_ms,
            "warnings": list(result.warnings), "verified": list(result.verified)}


def on_node(vm: Any, node: Any) -> bool:
    return vm.node in (node.id, node.name)


def within(module: Any, host: Any, params: dict[str, Any], result: dict[str, Any]) -> None:
    node = host.nodes.get(params["to_node"])
    # check mode reports the move of a VM an earlier task would make (as the other modules do)
    vm = find_vm(host, params["name"]) if module.check_mode else host.vms.get(params["name"])
    if vm is None:
        record_change(module, result, True, {"node": None}, {"node": node.name})
        return
    if record_change(module, result, not on_node(vm, node), {"node": vm.node}, {"node": node.name}):
        moved = vm.migrate(node, live=params["live"], storage=params["storage"], timeout=params["wait_timeout"])
        result["result"] = migration_facts(moved)
        vm = host.vms.get(moved.vm_id)
    result["vm"] = vm_facts(vm)


def across(module: Any, host: Any, target: Any, params: dict[str, Any], result: dict[str, Any]) -> None:
    name = params["target_name"] or params["name"]
    arrived = find_vm(target, name)
    act = record_change(module, result, arrived is None, {"on_target": arrived is not None}, {"on_target": True})
    if act:  # check mode reports the move of a VM an earlier task would make (as the other modules do)
        vm = host.vms.get(params["name"])  # NotFound: nothing to move
        if target.backend == host.backend:
            moved = vm.migrate(target, live=params["live"], storage=params["storage"], timeout=params["wait_timeout"])
        else:
            moved = anyvirt.migrate(vm, to=target, name=params["target_name"], shutdown=params["shutdown"],
                                    delete_source=params["delete_source"], start=params["start"],
                                    networks=params["networks"], timeout=params["wait_timeout"])
        result["result"] = migration_facts(moved)
        arrived = target.vms.get(moved.vm_id)
    result["vm"] = vm_facts(arrived) if arrived is not None else {}


def main() -> None:
    result: dict[str, Any] = {"changed": False, "vm": {}}
    with anyvirt_task(OPTIONS, result, mutually_exclusive=[("to_node", "to_uri")],
                      required_one_of=[("to_node", "to_uri")]) as (module, host):
        if module.params["to_node"]:
            within(module, host, module.params, result)
        else:
            with connect(module, prefix="to_") as target:
                across(module, host, target, module.params, result)


if __name__ == "__main__":
    main()
