#!/usr/bin/python
# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: anyvirt_snapshot
short_description: A VM's snapshot, present, absent or reverted to
version_added: "0.1.0"
description:
  - Takes, deletes or reverts to a named snapshot of a VM through anyvirt, on any platform that has snapshots.
  - V(present) and V(absent) are idempotent. V(reverted) is an action, like a restart. It reverts every time it
    runs, because no platform tells whether the VM has changed since the snapshot.
extends_documentation_fragment:
  - anyvirt.cloud.connection
attributes:
  check_mode:
    description: Reports what would change and changes nothing.
    support: full
  diff_mode:
    description: Shows whether the snapshot exists before and after.
    support: full
options:
  vm:
    description: The VM (name or id).
    type: str
    required: true
  name:
    description: The snapshot's name (or id).
    type: str
    required: true
  state:
    description: V(present) takes it if missing, V(absent) deletes it if there, V(reverted) reverts the VM to it.
    type: str
    choices: [present, absent, reverted]
    default: present
  description:
    description: A note stored with a new snapshot.
    type: str
    default: ""
  memory:
    description: Include a running VM's memory in a new snapshot.
    type: bool
    default: false
  children:
    description: With O(state=absent), delete the snapshot's children too.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for the operation.
    type: float
    default: 300
author:
  - anyvirt contributors (@anyvirt)
"""

EXAMPLES = r"""
- name: A snapshot before the upgrade
  anyvirt.cloud.anyvirt_snapshot:
    uri: vsphere://administrator%40vsphere.local@vc1
    password: "{{ vault_vc_password }}"
    vm: web1
    name: pre-upgrade

- name: Back to it
  anyvirt.cloud.anyvirt_snapshot:
    uri: vsphere://administrator%40vsphere.local@vc1
    password: "{{ vault_vc_password }}"
    vm: web1
    name: pre-upgrade
    state: reverted
"""

RETURN = r"""
snapshot:
  description: The snapshot after the task (empty when it is absent).
  returned: always
  type: dict
  sample: {"id": "1", "name": "pre-upgrade", "description": "", "created": "2026-12-06T23:00:00+00:00",
           "parent": null, "current": true, "memory": false}
"""

from typing import Any

from ansible_collections.anyvirt.cloud.plugins.module_utils.anyvirt_common import (
    anyvirt_task,
    find_snapshot,
    find_vm,
    record_change,
)

OPTIONS = {
    "vm": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent", "reverted"]},
    "description": {"type": "str", "default": ""},
    "memory": {"type": "bool", "default": False},
    "children": {"type": "bool", "default": False},
    "wait_timeout": {"type": "float", "default": 300},
}


def snapshot_facts(snapshot: Any) -> dict[str, Any]:
    if snapshot is None:
        return {}
    parent = snapshot.parent
    return {"id": snapshot.id, "name": snapshot.name, "description": snapshot.description,
            "created": snapshot.created.isoformat() if snapshot.created else None,
            "parent": parent.name if parent is not None else None, "current": snapshot.is_current,
            "memory": snapshot.memory}


def main() -> None:
    result: dict[str, Any] = {"changed": False, "snapshot": {}}
    with anyvirt_task(OPTIONS, result) as (module, host):
        params = module.params
        state = params["state"]
        vm = find_vm(host, params["vm"])
        if vm is None and not module.check_mode:
            host.vms.get(params["vm"])  # anyvirt's NotFound, with its message
        snapshot = find_snapshot(vm, params["name"])
        if state == "present":
            changed = snapshot is None
        elif state == "absent":
            changed = snapshot is not None
        else:
            if snapshot is None and vm is not None:
                vm.snapshots.get(params["name"])  # NotFound: nothing to revert to
            changed = True
        timeout = params["wait_timeout"]
        if record_change(module, result, changed, {"exists": snapshot is not None}, {"exists": state != "absent"}):
            if state == "present":
                snapshot = vm.snapshots.create(params["name"], description=params["description"],
                                               memory=params["memory"], timeout=timeout)
            elif state == "absent":
                snapshot.delete(children=params["children"], timeout=timeout)
                snapshot = None
            else:
                snapshot = snapshot.revert(timeout=timeout)
        result["snapshot"] = snapshot_facts(snapshot)


if __name__ == "__main__":
    main()
