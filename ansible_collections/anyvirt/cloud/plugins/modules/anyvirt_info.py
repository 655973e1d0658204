#!/usr/bin/python
# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: anyvirt_info
short_description: Facts about a platform's VMs, or one VM in detail
version_added: "0.1.0"
description:
  - Without O(name), lists every VM of the connection (one listing) and the host's facts.
  - With O(name), returns that VM in detail, with its disks, NICs and snapshots, and, when O(addresses) is set, its
    guest addresses.
  - It changes nothing.
extends_documentation_fragment:
  - anyvirt.cloud.connection
attributes:
  check_mode:
    description: Runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
options:
  name:
    description: One VM (name or id) to describe in detail.
    type: str
  addresses:
    description: With O(name), also read the VM's guest addresses (one more call).
    type: bool
    default: false
author:
  - anyvirt contributors (@anyvirt)
"""

EXAMPLES = r"""
- name: Every VM of the cluster
  anyvirt.cloud.anyvirt_info:
    uri: proxmox://root%40pam@pve1:8006
    password: "{{ vault_pve_password }}"
  register: pve

- name: One VM, with its addresses
  anyvirt.cloud.anyvirt_info:
    uri: libvirt+qemu:///system
    name: web1
    addresses: true
  register: web1
"""

RETURN = r"""
host:
  description: The host's facts (without O(name)).
  returned: when O(name) is not given
  type: dict
  sample: {"backend": "libvirt", "uri": "libvirt+qemu:///system", "name": "kvm1", "cpus": 16, "memory_mib": 65536,
           "nodes": ["kvm1"]}
vms:
  description: Every VM as the listing gives it (without O(name)).
  returned: when O(name) is not given
  type: list
  elements: dict
vm:
  description: The VM in detail (with O(name)); empty when there is no such VM.
  returned: when O(name) is given
  type: dict
  sample: {"id": "8d1f...", "name": "web1", "state": "running", "cpus": 2, "memory_mib": 2048, "node": "kvm1",
           "template": false, "disks": [{"id": "vda", "size_bytes": 10737418240, "format": "qcow2"}],
           "nics": [{"id": "net0", "mac": "52:54:00:12:34:56", "network": "default"}], "snapshots": ["pre"]}
exists:
  description: Whether the VM named by O(name) exists.
  returned: when O(name) is given
  type: bool
"""

from typing import Any

from ansible_collections.anyvirt.cloud.plugins.module_utils.anyvirt_common import (
    address_facts,
    anyvirt,
    anyvirt_task,
    find_vm,
    vm_facts,
)

OPTIONS = {"name": {"type": "str"}, "addresses": {"type": "bool", "default": False}}


def detail(vm: Any, with_addresses: bool) -> dict[str, Any]:
    info = vm.info()
    facts = vm_facts(vm)
    facts.update(
        raw_state=info.raw_state, firmware=info.firmware.value, guest_os=info.guest_os,
        description=info.description,
        disks=[{"id": d.id, "size_bytes": d.size_bytes, "path": d.path, "format": d.format, "bus": d.bus,
                "storage": d.storage, "backing": d.backing} for d in info.disks],
        nics=[{"id": n.id, "network": n.network, "mac": n.mac, "model": n.model} for n in info.nics],
    )
    facts["snapshots"] = [s.name for s in vm.snapshots.list()] if vm.host.supports(anyvirt.Capability.SNAPSHOTS) else []
    if with_addresses:
        facts["addresses"] = address_facts(vm.addresses())
    return facts


def main() -> None:
    result: dict[str, Any] = {"changed": False}
    with anyvirt_task(OPTIONS, result) as (module, host):
        params = module.params
        if params["name"] is not None:
            vm = find_vm(host, params["name"])
            result["exists"] = vm is not None
            result["vm"] = detail(vm, params["addresses"]) if vm is not None else {}
        else:
            info = host.info()
            result["host"] = {"backend": host.backend, "uri": host.uri, "name": info.name,
                              "hypervisor": info.hypervisor, "cpus": info.cpus, "memory_mib": info.memory_mib,
                              "nodes": [node.name for node in host.nodes.list()]}
            result["vms"] = [vm_facts(vm) for vm in host.vms.list()]


if __name__ == "__main__":
    main()
