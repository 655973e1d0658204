#!/usr/bin/python
# Copyright: anyvirt contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: anyvirt_backup
short_description: A stopped VM backed up to a portable archive or a backup repository
version_added: "0.1.0"
description:
  - Writes a stopped VM (configuration and disks) to a portable archive that M(anyvirt.cloud.anyvirt_restore)
    rebuilds on any backend, or adds a restore point to a backup repository.
  - The backup is made when the archive does not exist yet, or when the repository has no point of the VM newer
    than O(max_age_hours). A second run reports no change.
extends_documentation_fragment:
  - anyvirt.cloud.connection
  - anyvirt.cloud.backup_target
attributes:
  check_mode:
    description: Reports whether a backup would be made and makes none.
    support: full
  diff_mode:
    description: Shows whether the backup exists before and after.
    support: full
options:
  name:
    description: The VM to back up (name or id). It must be stopped.
    type: str
    required: true
  max_age_hours:
    description:
      - With O(repository), a new restore point is made only when the newest one of the VM is older than this.
        Run daily with V(20) to get one point a day.
    type: float
    default: 24
  wait_timeout:
    description: Seconds to wait for the backup.
    type: float
    default: 3600
author:
  - anyvirt contributors (@anyvirt)
"""

EXAMPLES = r"""
- name: A portable archive of web1
  anyvirt.cloud.anyvirt_backup:
    uri: libvirt+qemu:///system
    name: web1
    path: /srv/archives/web1.avbk

- name: A restore point a day, in an encrypted repository
  anyvirt.cloud.anyvirt_backup:
    uri: libvirt+qemu:///system
    name: web1
    repository: sftp://backup@nas/srv/anyvirt
    key_filename: ~/.ssh/backup
    known_hosts: ~/.ssh/known_hosts
    passphrase: "{{ vault_repository_passphrase }}"
    max_age_hours: 20
"""

RETURN = r"""
path:
  description: The archive (with O(path)).
  returned: with O(path)
  type: str
point:
  description: The newest restore point of the VM (with O(repository)).
  returned: with O(repository), when the VM has one
  type: dict
  sample: {"id": "20261206T230000Z-1a2b3c", "vm_name": "web1", "created": "2026-12-06T23:00:00+00:00",
           "incremental": true, "read_bytes": 1048576, "stored_bytes": 65536}
"""

import datetime as dt
import os
from typing import Any

from ansible_collections.anyvirt.cloud.plugins.module_utils.anyvirt_common import (
    BACKUP_TARGET_ARGS,
    BACKUP_TARGET_EXCLUSIVE,
    anyvirt_task,
    find_vm,
    open_repository,
    record_change,
)

OPTIONS = {
    "name": {"type": "str", "required": True},
    "max_age_hours": {"type": "float", "default": 24},
    "wait_timeout": {"type": "float", "default": 3600},
    **BACKUP_TARGET_ARGS,
}


def point_facts(point: Any) -> dict[str, Any]:
    if point is None:
        return {}
    return {"id": point.id, "vm_name": point.vm_name, "vm_id": point.vm_id, "created": point.created.isoformat(),
            "incremental": point.incremental, "read_bytes": point.read_bytes, "stored_bytes": point.stored_bytes}


def is_fresh(point: Any, max_age_hours: float) -> bool:
    if point is None:
        return False
    return dt.datetime.now(dt.UTC) - point.created < dt.timedelta(hours=max_age_hours)


def diff_views(changed: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"backed_up": not changed}, {"backed_up": True}


def main() -> None:
    result: dict[str, Any] = {"changed": False}
    with anyvirt_task(OPTIONS, result, mutually_exclusive=BACKUP_TARGET_EXCLUSIVE,
                      required_one_of=BACKUP_TARGET_EXCLUSIVE) as (module, host):
        params = module.params
        vm = find_vm(host, params["name"])
        if vm is None and not module.check_mode:
            host.vms.get(params["name"])  # anyvirt's NotFound, with its message
        if params["path"]:
            result["path"] = params["path"]
            changed = not os.path.exists(params["path"])
            if record_change(module, result, changed, *diff_views(changed)):
                vm.backup(params["path"], timeout=params["wait_timeout"])
        else:
            # in check mode a repository not made yet is one the backup would make
            repo = open_repository(params, create=not module.check_mode, missing_ok=module.check_mode)
            try:
                latest = repo.points(vm=vm.id)[-1:] if repo is not None and vm is not None else []
                newest = latest[0] if latest else None
                changed = not is_fresh(newest, params["max_age_hours"])
                if record_change(module, result, changed, *diff_views(changed)):
                    newest = repo.backup(vm, timeout=params["wait_timeout"])
                result["point"] = point_facts(newest)
            finally:
                if repo is not None:
                    repo.close()


if __name__ == "__main__":
    main()
