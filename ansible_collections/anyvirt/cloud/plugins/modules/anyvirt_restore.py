#!/usr/bin/python
# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: anyvirt_restore
short_description: A VM rebuilt from a portable archive or a repository's restore point, on any backend
version_added: "0.1.0"
description:
  - Rebuilds a VM on the URI's platform from an archive made by M(anyvirt.cloud.anyvirt_backup) (or
    C(vm.backup())), or from a restore point of a backup repository, whatever platform it was made on.
  - Nothing is done when a VM named O(name) exists already, so a second run reports no change.
extends_documentation_fragment:
  - anyvirt.cloud.connection
  - anyvirt.cloud.backup_target
attributes:
  check_mode:
    description: Reports whether the VM would be restored and restores nothing.
    support: full
  diff_mode:
    description: Shows whether the VM exists before and after.
    support: full
options:
  name:
    description: The restored VM's name.
    type: str
    required: true
  point:
    description:
      - With O(repository), the restore point's id. By default the newest point of the VM named O(source_vm).
    type: str
  source_vm:
    description: With O(repository) and no O(point), the backed-up VM (name or id) whose newest point is restored.
    type: str
  networks:
    description:
      - Maps the archive's networks to this host's (C({"lab":"default"}), C({"*":"default"})), where this host
        has no network of the same name.
    type: dict
  wait_timeout:
    description: Seconds to wait for the restore.
    type: float
    default: 3600
author:
  - anyvirt contributors (@anyvirt)
"""

EXAMPLES = r"""
- name: web1, rebuilt on the Proxmox cluster from its libvirt archive
  anyvirt.cloud.anyvirt_restore:
    uri: proxmox://root%40pam@pve1:8006
    password: "{{ vault_pve_password }}"
    path: /srv/archives/web1.avbk
    name: web1-restored
    networks: {"*": "vmbr0"}
"""

RETURN = r"""
vm:
  description: The restored VM (or the one that existed).
  returned: always
  type: dict
  sample: {"id": "105", "name": "web1-restored", "state": "stopped", "cpus": 2, "memory_mib": 2048,
           "node": "pve1", "template": false}
"""

import contextlib
from typing import Any

from ansible_collections.anyvirt.cloud.plugins.module_utils.anyvirt_common import (
    BACKUP_TARGET_ARGS,
    BACKUP_TARGET_EXCLUSIVE,
    anyvirt_task,
    find_vm,
    open_repository,
    record_change,
    vm_facts,
)

OPTIONS = {
    "name": {"type": "str", "required": True},
    "point": {"type": "str"},
    "source_vm": {"type": "str"},
    "networks": {"type": "dict"},
    "wait_timeout": {"type": "float", "default": 3600},
    **BACKUP_TARGET_ARGS,
}


def chosen_point(repo: Any, params: dict[str, Any]) -> Any:
    if params["point"]:
        return params["point"]
    points = repo.points(vm=params["source_vm"])
    if not points:
        raise LookupError(f"the repository has no restore point of {params['source_vm']!r}")
    return points[-1]


def refuse(params: dict[str, Any]) -> str | None:
    if params["repository"] and not (params["point"] or params["source_vm"]):
        return "with repository, give point or source_vm"
    return None


def main() -> None:
    result: dict[str, Any] = {"changed": False, "vm": {}}
    with anyvirt_task(OPTIONS, result, refuse, mutually_exclusive=BACKUP_TARGET_EXCLUSIVE,
                      required_one_of=BACKUP_TARGET_EXCLUSIVE,
                      required_by={"point": "repository", "source_vm": "repository"}) as (module, host):
        params = module.params
        vm = find_vm(host, params["name"])
        if record_change(module, result, vm is None, {"exists": vm is not None}, {"exists": True}):
            options = {"name": params["name"], "networks": params["networks"], "timeout": params["wait_timeout"]}
            if params["path"]:
                vm = host.restore(params["path"], **options)
            else:
                with contextlib.closing(open_repository(params, create=False)) as repo:
                    try:
                        point = chosen_point(repo, params)
                    except LookupError as exc:
                        module.fail_json(msg=str(exc), **result)
                    vm = repo.restore(point, to=host, **options)
        result["vm"] = vm_facts(vm) if vm is not None else {}


if __name__ == "__main__":
    main()
