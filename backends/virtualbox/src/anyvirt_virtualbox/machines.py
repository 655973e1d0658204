"""Reading VMs: the listing in a fixed number of processes, and one VM in detail.

A listing is ``list vms`` and ``list runningvms`` (two processes whatever the
number of VMs) plus each VM's ``.vbox`` file, found through the registry in
``VirtualBox.xml``. A VM whose file cannot be read (a home this process cannot
see) costs one ``showvminfo`` instead. ``list runningvms`` names running and
paused VMs alike, so the listing reports both as running; ``vm.refresh()``
(``showvminfo``) tells them apart.
"""

from __future__ import annotations

from pathlib import Path

from anyvirt.model import MIB, DiskInfo, PowerState, VMInfo, VMSummary
from anyvirt_virtualbox import listings, machinereadable, settings, vminfo
from anyvirt_virtualbox.machinereadable import Parsed
from anyvirt_virtualbox.runner import VBoxManage

INACCESSIBLE = "<inaccessible>"


def show(vbox: VBoxManage, vm: str) -> Parsed:
    """``showvminfo --machinereadable`` of one VM (``NotFound`` when it is not registered)."""
    out = vbox.run(["showvminfo", vm, "--machinereadable"], f"reading VM {vm!r}")
    return machinereadable.parse(out.stdout)


def facts_of(info: Parsed) -> settings.MachineFacts | None:
    cfg = info.get("CfgFile")
    return settings.machine_facts(Path(cfg)) if cfg else None


def settings_of(vbox: VBoxManage, home: Path | None, vm_id: str) -> settings.MachineFacts | None:
    """A VM's ``.vbox`` facts: through the registry (no process) for a registered UUID, else
    through ``showvminfo`` (``NotFound`` for a VM that does not exist); None when unreadable."""
    path = settings.registered_machines(home).get(vm_id.lower()) if home is not None else None
    facts = settings.machine_facts(path) if path is not None else None
    if facts is not None and facts.uuid == vm_id.lower():
        return facts
    return facts_of(show(vbox, vm_id))


def summary(vbox: VBoxManage, vm: str, node: str) -> VMSummary:
    info = show(vbox, vm)
    facts = facts_of(info)
    return vminfo.summary(info, node, template=bool(facts and facts.template))


def _listed_state(uuid: str, running: set[str], facts: settings.MachineFacts) -> tuple[PowerState, str]:
    if uuid in running:
        return PowerState.RUNNING, "running"
    if facts.saved:
        return PowerState.SUSPENDED, "aborted-saved" if facts.aborted else "saved"
    if facts.aborted:
        return PowerState.CRASHED, "aborted"
    return PowerState.STOPPED, "poweroff"


def list_all(vbox: VBoxManage, home: Path | None, node: str, can_run: bool = True) -> list[VMSummary]:
    """Every VM; with ``can_run=False`` (no kernel driver: nothing can be running) ``list
    runningvms`` is not asked."""
    listed = listings.list_vms(vbox.run(["list", "vms"], "listing VMs").stdout)
    running: set[str] = set()
    if can_run:
        text = vbox.run(["list", "runningvms"], "listing running VMs").stdout
        running = {v.uuid for v in listings.list_vms(text)}
    registry = settings.registered_machines(home) if home is not None else {}
    out = []
    for vm in listed:
        path = registry.get(vm.uuid)
        facts = settings.machine_facts(path) if path is not None else None
        if facts is None or facts.uuid != vm.uuid:
            if vm.name == INACCESSIBLE:
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
            out.append(summary(vbox, vm.uuid, node))
            continue
        state, raw = _listed_state(vm.uuid, running, facts)
        out.append(
            VMSummary(
                id=vm.uuid,
                name=facts.name or vm.name,
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


def disks(info: Parsed, by_uuid: dict[str, listings.Medium]) -> tuple[DiskInfo, ...]:
    """The VM's hard disks (DVD drives left out), sizes and formats from ``list hdds``.

    ``backing`` names the base image a linked clone reads from: the base of the
    attached image's chain when that base lives outside this VM's folder (the
    chain of the VM's own snapshots stays inside it).
    """
    folder = str(Path(info.get("CfgFile")).parent) if info.get("CfgFile") else None
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
    info = show(vbox, vm)
    facts = facts_of(info)
    return vminfo.vm_info(info, node, disks(info, media(vbox)), template=bool(facts and facts.template))


def dependent_media(vbox: VBoxManage, vm_id: str) -> list[str]:
    """Disk images outside this VM's folder whose chain reads from an image inside it:
    linked clones' disks."""
    info = show(vbox, vm_id)
    folder = str(Path(info.get("CfgFile")).parent) + "/"
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
