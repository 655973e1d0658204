"""Reading VMs: the listing in a fixed number of processes, and one VM in detail.

A listing is ``list vms`` and ``list runningvms`` (two processes whatever the
number of VMs) plus each VM's ``.vbox`` file, found through the registry in
``VirtualBox.xml``. A VM whose file cannot be read (a home this process cannot
see) costs one ``showvminfo`` instead. ``list runningvms`` names running and
paused VMs alike, so the listing reports both as running; ``vm.refresh()``
(``showvminfo``) tells them apart.

**Output is data, never structure.** A VM is always addressed by its UUID:
a name is resolved here first, so it never reaches ``VBoxManage`` (where
``--help`` would be an option) and the VM acted on is the one resolved. Its
id is the UUID asked about, never one read back; its name, CPUs, memory and
settings path come from its ``.vbox`` file (found through the registry), and
``showvminfo``'s own lines only fill in what that file lacks (the run state,
disks, NICs), parsed so that a value ends at its closing quote and a key
forged inside a value never replaces the real one.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from pathlib import Path

from anyvirt.errors import ConnectionFailed, NotFound
from anyvirt.model import MIB, DiskInfo, PowerState, VMInfo, VMSummary
from anyvirt_virtualbox import listings, machinereadable, settings, vminfo
from anyvirt_virtualbox.machinereadable import Parsed
from anyvirt_virtualbox.runner import VBoxManage, default_home

INACCESSIBLE = "<inaccessible>"
_UUID = re.compile(r"^\{?(?P<uuid>[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})\}?$")


def home_of(vbox: VBoxManage) -> Path:
    return Path(vbox.home) if vbox.home else default_home()


def resolve(vbox: VBoxManage, ref: str) -> str:
    """The UUID of the VM ``ref`` names: a UUID as it is (as VirtualBox reads one), a name
    through the registry's ``.vbox`` files (exact, whatever the name holds), else through
    ``list vms``, where a line a name forged is told by its UUID printed twice."""
    m = _UUID.match(ref)
    if m:
        return m["uuid"].lower()
    for uuid, path in settings.registered_machines(home_of(vbox)).items():
        facts = settings.machine_facts(path)
        if facts is not None and facts.uuid == uuid and facts.name == ref:
            return uuid
    listed = listings.list_vms(vbox.run(["list", "vms"], "listing VMs").stdout)
    printed = Counter(v.uuid for v in listed)
    for vm in listed:
        if vm.name == ref and printed[vm.uuid] == 1:
            return vm.uuid
    raise NotFound(f"no VM named {ref!r}")


def show(vbox: VBoxManage, vm: str) -> Parsed:
    """``showvminfo --machinereadable`` of one VM, asked by UUID (``NotFound`` when it is not
    registered)."""
    uuid = resolve(vbox, vm)
    out = vbox.run(["showvminfo", uuid, "--machinereadable"], f"reading VM {vm!r}")
    info = machinereadable.parse(out.stdout)
    if info.get("UUID").lower() != uuid:
        raise ConnectionFailed(f"VBoxManage showvminfo {uuid} described another VM ({info.get('UUID')!r})")
    return info


def settings_path(vbox: VBoxManage, vm_id: str, info: Parsed | None = None) -> Path | None:
    """The VM's ``.vbox`` file: the registry's entry for its UUID, else showvminfo's
    ``CfgFile`` (None when neither names one)."""
    uuid = resolve(vbox, vm_id)
    path = settings.registered_machines(home_of(vbox)).get(uuid)
    if path is not None:
        return path
    cfg = (info if info is not None else show(vbox, uuid)).get("CfgFile")
    return Path(cfg) if cfg else None


def facts_for(vbox: VBoxManage, vm_id: str, info: Parsed | None = None) -> settings.MachineFacts | None:
    """The VM's ``.vbox`` facts, when its file can be read and is this VM's."""
    uuid = resolve(vbox, vm_id)
    path = settings_path(vbox, uuid, info)
    facts = settings.machine_facts(path) if path is not None else None
    return facts if facts is not None and facts.uuid == uuid else None


def settings_of(vbox: VBoxManage, home: Path | None, vm_id: str) -> settings.MachineFacts | None:
    """A VM's ``.vbox`` facts (``NotFound`` for a VM that does not exist); None when unreadable."""
    del home  # the runner's own home is the one its VBoxSVC registers VMs in
    return facts_for(vbox, vm_id)


def summary(vbox: VBoxManage, vm: str, node: str) -> VMSummary:
    uuid = resolve(vbox, vm)
    info = show(vbox, uuid)
    return vminfo.summary(info, node, uuid, facts_for(vbox, uuid, info))


def _listed_state(uuid: str, running: set[str], facts: settings.MachineFacts) -> tuple[PowerState, str]:
    if uuid in running:
        return PowerState.RUNNING, "running"
    if facts.saved:
        return PowerState.SUSPENDED, "aborted-saved" if facts.aborted else "saved"
    if facts.aborted:
        return PowerState.CRASHED, "aborted"
    return PowerState.STOPPED, "poweroff"


#: a VM's state from a listing's facts (the watch's cheap poll reads them the same way)
listed_state = _listed_state


def list_all(vbox: VBoxManage, home: Path | None, node: str, can_run: bool = True) -> list[VMSummary]:
    """Every VM; with ``can_run=False`` (no kernel driver: nothing can be running) ``list
    runningvms`` is not asked."""
    listed = listings.list_vms(vbox.run(["list", "vms"], "listing VMs").stdout)
    printed = Counter(v.uuid for v in listed)
    running: set[str] = set()
    if can_run:
        text = vbox.run(["list", "runningvms"], "listing running VMs").stdout
        running = {v.uuid for v in listings.list_vms(text)}
    registry = settings.registered_machines(home) if home is not None else {}
    out = []
    seen: set[str] = set()
    for vm in listed:
        if vm.uuid in seen:
            continue
        seen.add(vm.uuid)
        path = registry.get(vm.uuid)
        facts = settings.machine_facts(path) if path is not None else None
        if facts is None or facts.uuid != vm.uuid:
            if vm.name == INACCESSIBLE and printed[vm.uuid] == 1:
                out.append(
                    VMSummary(
                        id=vm.uuid,
                        name=vm.name,
                        state=PowerState.UNKNOWN,
                        raw_state="inaccessible",
                        node=node,
                    )
                )
                continue
            with contextlib.suppress(NotFound):  # gone since, or a line a VM's name forged
                out.append(summary(vbox, vm.uuid, node))
            continue
        state, raw = _listed_state(vm.uuid, running, facts)
        out.append(
            VMSummary(
                id=vm.uuid,
                name=facts.name,
                state=state,
                raw_state=raw,
                cpus=facts.cpus,
                memory_mib=facts.memory_mib,
                node=node,
                template=facts.template,
            )
        )
    return out


def media(vbox: VBoxManage) -> dict[str, listings.Medium]:
    out = vbox.run(["list", "hdds"], "listing disk media").stdout
    return {m.uuid: m for m in listings.media(out)}


def base_of(medium: listings.Medium, by_uuid: dict[str, listings.Medium]) -> listings.Medium:
    seen = set()
    while medium.parent and medium.parent in by_uuid and medium.uuid not in seen:
        seen.add(medium.uuid)
        medium = by_uuid[medium.parent]
    return medium


def disks(
    info: Parsed, by_uuid: dict[str, listings.Medium], settings_file: Path | None = None
) -> tuple[DiskInfo, ...]:
    """The VM's hard disks (DVD drives left out), sizes and formats from ``list hdds``.

    ``backing`` names the base image a linked clone reads from: the base of the
    attached image's chain when that base lives outside this VM's folder (the
    chain of the VM's own snapshots stays inside it).
    """
    cfg = settings_file or (Path(info.get("CfgFile")) if info.get("CfgFile") else None)
    folder = str(cfg.parent) if cfg else None
    out = []
    for att in vminfo.attachments(info):
        if att.dvd:
            continue
        medium = by_uuid.get(att.image_uuid or "")
        size = fmt = backing = None
        if medium is not None:
            size = medium.capacity_mib * MIB if medium.capacity_mib is not None else None
            fmt = medium.format.lower() or None
            base = base_of(medium, by_uuid)
            if base.uuid != medium.uuid and folder and not base.location.startswith(folder + "/"):
                backing = base.location
        out.append(
            DiskInfo(id=att.id, size_bytes=size, path=att.path, format=fmt, bus=att.bus, backing=backing)
        )
    return tuple(out)


def describe(vbox: VBoxManage, vm: str, node: str) -> VMInfo:
    uuid = resolve(vbox, vm)
    info = show(vbox, uuid)
    path = settings_path(vbox, uuid, info)
    facts = facts_for(vbox, uuid, info)
    return vminfo.vm_info(info, node, uuid, facts, path, disks(info, media(vbox), path))


def dependent_media(vbox: VBoxManage, vm_id: str) -> list[str]:
    """Disk images outside this VM's folder whose chain reads from an image inside it:
    linked clones' disks."""
    path = settings_path(vbox, vm_id)
    if path is None:
        return []
    folder = str(path.parent) + "/"
    by_uuid = media(vbox)
    ours = {m.uuid for m in by_uuid.values() if m.location.startswith(folder)}
    out = []
    for m in by_uuid.values():
        if m.uuid in ours:
            continue
        if any(a.uuid in ours for a in _ancestors(m, by_uuid)):
            out.append(m.location)
    return sorted(out)


def _ancestors(medium: listings.Medium, by_uuid: dict[str, listings.Medium]) -> list[listings.Medium]:
    out: list[listings.Medium] = []
    while medium.parent and medium.parent in by_uuid and len(out) < len(by_uuid):
        medium = by_uuid[medium.parent]
        out.append(medium)
    return out


def linked_clones(vbox: VBoxManage, home: Path | None, vm_id: str) -> list[str]:
    """The names of the VMs whose disks read from this VM's (a disk's folder names its VM)."""
    used = dependent_media(vbox, vm_id)
    if not used:
        return []
    folders = {}
    for path in (settings.registered_machines(home) if home is not None else {}).values():
        facts = settings.machine_facts(path)
        if facts is not None:
            folders[str(path.parent)] = facts.name
    names = set()
    for location in used:
        owner = next(
            (name for folder, name in folders.items() if location.startswith(folder + "/")), location
        )
        names.add(owner)
    return sorted(names)


def delete(vbox: VBoxManage, vm_id: str, with_disks: bool, timeout: float | None) -> None:
    """Unregister the VM (with its files), then remove the folders VirtualBox made for it
    and left empty: a clone named ``team/web`` keeps its disk in ``team_web/team/``, and
    ``unregistervm --delete`` removes the files but not that folder, nor so its parent."""
    uuid = resolve(vbox, vm_id)
    path = settings_path(vbox, uuid) if with_disks else None
    args = ["unregistervm", uuid, "--delete"] if with_disks else ["unregistervm", uuid]
    vbox.run(args, f"deleting VM {vm_id}", timeout=timeout)
    if path is not None:
        remove_empty_folders(path.parent)


def remove_empty_folders(folder: Path) -> None:
    """``folder`` and the folders in it, where empty: never a file, never a folder in use."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for root, dirs, _ in os.walk(folder, topdown=False):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, name))
    with contextlib.suppress(OSError):
        folder.rmdir()
