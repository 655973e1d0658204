"""Changed Block Tracking (CBT): vSphere's record of what a VM wrote to its disks.

Written to the vSphere API and **untested against a real vSphere**: vcsim 0.24.2,
this project's testbed, keeps ``changeTrackingEnabled`` but gives disks no
``changeId`` and has no ``QueryChangedDiskAreas`` (``MethodNotFound``). There
every backup is a full read, deduplicated, and that fallback is what the tests
prove.

How it works on vSphere: with ``config.changeTrackingEnabled`` set (the first
backup sets it; it takes effect when the disk is next opened), each disk's
``backing.changeId`` names its state. A mark is ``cbt:<device key>:<changeId>``;
``QueryChangedDiskAreas(snapshot=None, deviceKey, startOffset, changeId)`` then
lists the areas written since (vSphere allows no snapshot for a powered-off VM,
which is what a backup holds). Any fault (an unknown or reset change id after a
disk was replaced, CBT turned off, a method the server lacks) is a full read,
never a backup built on a wrong record. Change ids are not objects on the
platform: dropping a mark frees nothing.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from anyvirt.errors import AnyvirtError
from anyvirt.tasks import Job
from anyvirt_vsphere.inventory import Inventory
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.tasks import run_task
from anyvirt_vsphere.vms import disk_devices

log = logging.getLogger("anyvirt")
_MARK = re.compile(r"^cbt:(\d+):(.{1,200})$")
PATHS = ("config.changeTrackingEnabled", "config.hardware.device")


def change_mark(inventory: Inventory, vm_id: str, disk_id: str, job: Job) -> str | None:
    """The disk's current change id as a mark; None (and CBT turned on) where CBT is off."""
    props = inventory.vm_props(vm_id, PATHS)
    if not props.get("config.changeTrackingEnabled"):
        spec = vim.vm.ConfigSpec()
        spec.changeTrackingEnabled = True
        try:
            run_task(inventory.collector, lambda: props.ref.ReconfigVM_Task(spec=spec), job,
                     f"turning on changed block tracking of VM {vm_id}")
        except AnyvirtError as exc:
            log.info("changed block tracking of VM %s stays off: %s", vm_id, exc)
        return None  # a change id appears when the disk is next opened
    found = disk_devices(list(props.get("config.hardware.device") or ())).get(disk_id)
    change_id = getattr(found[1].backing, "changeId", None) if found else None
    return f"cbt:{found[1].key}:{change_id}" if found and change_id else None


def changed_extents(inventory: Inventory, vm_id: str, disk_id: str, since: str,
                    job: Job) -> list[tuple[int, int]] | None:
    """The areas written since the mark ``since``; None when vSphere cannot say."""
    mark = _MARK.match(since)
    props = inventory.vm_props(vm_id, PATHS)
    found = disk_devices(list(props.get("config.hardware.device") or ())).get(disk_id)
    if mark is None or found is None or not props.get("config.changeTrackingEnabled") \
            or int(mark.group(1)) != found[1].key:
        return None
    disk = found[1]
    size = disk.capacityInBytes or (disk.capacityInKB or 0) * 1024
    out: list[tuple[int, int]] = []
    offset = 0
    try:
        while offset < size:
            job.check()
            info = _query(inventory, props.ref, disk.key, offset, mark.group(2))
            out += [(int(a.start), int(a.length)) for a in (info.changedArea or ())]
            if int(info.length) <= 0:
                return None
            offset = int(info.startOffset) + int(info.length)
    except Exception as exc:  # anyvirt's errors, vim faults, vmodl's MethodNotFound: no answer
        log.info("vSphere cannot say what changed on %s of VM %s (%s): a full read",
                 disk_id, vm_id, type(exc).__name__)
        return None
    return out


def _query(inventory: Inventory, ref: Any, key: int, offset: int, change_id: str) -> Any:
    return inventory.collector.session.call(
        lambda: ref.QueryChangedDiskAreas(snapshot=None, deviceKey=key, startOffset=offset,
                                          changeId=change_id),
        "reading the changed areas of a disk", read=True)


__all__ = ["change_mark", "changed_extents"]
