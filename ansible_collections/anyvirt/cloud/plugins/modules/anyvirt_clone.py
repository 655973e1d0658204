#!/usr/bin/python
# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: anyvirt_clone
short_description: Clones of a VM or template, one or many, each with its own identity
version_added: "0.1.0"
description:
  - Copies O(source) as O(name), or with O(count) as C(name-1) .. C(name-N), through anyvirt on any platform.
  - Clones that exist already are left alone; only missing ones are made, so a second run reports no change.
  - With O(wait_ready), every clone is started and the task waits until each runs and has a routable address.
extends_documentation_fragment:
  - anyvirt.cloud.connection
  - anyvirt.cloud.identity
attributes:
  check_mode:
    description: Reports the clones that would be made (and started) and changes nothing.
    support: full
  diff_mode:
    description: Shows which of the clones exist before and after.
    support: full
options:
  source:
    description: The VM or template to copy (name or id).
    type: str
    required: true
  name:
    description: The clone's name, or with O(count) the prefix of the clones' names.
    type: str
    required: true
  count:
    description: Make this many clones, named C(name-1) .. C(name-N).
    type: int
  linked:
    description: Share the source's disks copy-on-write (a linked clone) rather than copying them.
    type: bool
    default: false
  concurrency:
    description: How many clones are made at a time.
    type: int
  node:
    description: The node to place the clones on.
    type: str
  storage:
    description: The pool or datastore for the clones' disks.
    type: str
  wait_ready:
    description: Start every clone and wait until it runs and has a routable address.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for the copies, and for each clone to be ready.
    type: float
    default: 600
author:
  - anyvirt contributors (@anyvirt)
"""

EXAMPLES = r"""
- name: Ten web servers from a template, each with its own host name, up and addressed
  anyvirt.cloud.anyvirt_clone:
    uri: libvirt+qemu:///system
    source: debian12-template
    name: web
    count: 10
    linked: true
    concurrency: 4
    identity:
      users:
        - name: ops
          ssh_keys: ["ssh-ed25519 AAAA... ops@laptop"]
          sudo: true
    wait_ready: true
  register: web

- name: Their addresses
  ansible.builtin.debug:
    msg: "{{ web.vms | map(attribute='addresses') | list }}"
"""

RETURN = r"""
vms:
  description: Every clone the task names, after the task, with its addresses when O(wait_ready) is set.
  returned: always
  type: list
  elements: dict
  sample: [{"id": "8d1f...", "name": "web-1", "state": "running", "cpus": 2, "memory_mib": 2048,
            "node": "kvm1", "template": false, "addresses": [{"ip": "192.0.2.10", "mac": "52:54:00:12:34:56",
            "prefix": 24, "source": "lease"}]}]
created:
  description: The names of the clones the task made (or would make, in check mode).
  returned: always
  type: list
  elements: str
started:
  description: The names of the clones the task started (or would start) to wait for them.
  returned: always
  type: list
  elements: str
"""

from typing import Any

from ansible_collections.anyvirt.cloud.plugins.module_utils.anyvirt_common import (
    IDENTITY_ARG,
    address_facts,
    anyvirt_task,
    find_vm,
    identity_from_params,
    record_change,
    vm_facts,
)

OPTIONS = {
    "source": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "count": {"type": "int"},
    "linked": {"type": "bool", "default": False},
    "concurrency": {"type": "int"},
    "node": {"type": "str"},
    "storage": {"type": "str"},
    "identity": IDENTITY_ARG,
    "wait_ready": {"type": "bool", "default": False},
    "wait_timeout": {"type": "float", "default": 600},
}


def clone_names(params: dict[str, Any]) -> list[str]:
    """The names anyvirt gives: ``name``, or ``name-1`` .. ``name-N`` with ``count``."""
    count = params["count"]
    if count is None:
        return [params["name"]]
    return [f"{params['name']}-{index}" for index in range(1, count + 1)]


def make_clones(source: Any, missing: list[str], params: dict[str, Any], identity: Any) -> None:
    """All at once (one reservation, ``concurrency`` at a time) when none exists yet; else
    one by one, for the names a partial earlier run left missing."""
    options = {"linked": params["linked"], "identity": identity, "node": params["node"],
               "storage": params["storage"], "timeout": params["wait_timeout"]}
    if params["count"] is not None and len(missing) == params["count"]:
        source.clone(params["name"], count=params["count"], concurrency=params["concurrency"], **options)
        return
    for name in missing:
        source.clone(name, **options)


def refuse(params: dict[str, Any]) -> str | None:
    if params["count"] is not None and params["count"] < 1:
        return f"count must be 1 or more, not {params['count']}"
    return None


def main() -> None:
    result: dict[str, Any] = {"changed": False, "vms": [], "created": [], "started": []}
    with anyvirt_task(OPTIONS, result, refuse) as (module, host):
        params = module.params
        identity = identity_from_params(params["identity"])
        names = clone_names(params)
        found = {name: find_vm(host, name) for name in names}
        missing = [name for name in names if found[name] is None]
        source = find_vm(host, params["source"])
        if source is None and (missing and not module.check_mode):
            host.vms.get(params["source"])  # raises anyvirt's NotFound, with its message
        to_start = [name for name in names if params["wait_ready"]
                    and (found[name] is None or found[name].state.value != "running")]
        result.update(created=missing, started=to_start)
        record_change(module, result, bool(missing or to_start),
                      {"exist": sorted(n for n in names if found[n] is not None)}, {"exist": sorted(names)})
        if module.check_mode:
            result["vms"] = [vm_facts(found[n]) if found[n] is not None else {"name": n} for n in names]
            return
        if missing:
            make_clones(source, missing, params, identity)
        clones = [host.vms.get(name) for name in names]
        for vm in clones:  # all start first, so their boots overlap while we wait
            if vm.name in to_start:
                vm.start(timeout=params["wait_timeout"])
        facts = []
        for vm in clones:
            entry = vm_facts(vm.refresh())
            if params["wait_ready"]:
                entry["addresses"] = address_facts(vm.wait_ready(timeout=params["wait_timeout"]))
            facts.append(entry)
        result["vms"] = facts


if __name__ == "__main__":
    main()
