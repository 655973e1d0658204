"""A cheap poll for the watch: at most one VBoxManage process per interval.

VirtualBox has an event source in its API but none in VBoxManage, so the watch
polls. The full listing asks two processes (``list vms``, ``list runningvms``);
this poll reads the machine registry (``VirtualBox.xml``) and each machine's
``.vbox`` file, which hold names, CPUs, memory, the template mark and saved
or aborted states, and asks only ``list runningvms``, and nothing at all where
no kernel driver is loaded (nothing can run). Whenever the files do not
answer for every VM (no registry, an unreadable settings file, an
inaccessible machine), the poll falls back to the full listing.
"""

from __future__ import annotations

from pathlib import Path

from anyvirt.model import VMSummary
from anyvirt_virtualbox import listings, machines, settings
from anyvirt_virtualbox.runner import VBoxManage


def poll(vbox: VBoxManage, home: Path | None, node: str, can_run: bool) -> list[VMSummary]:
    """Every VM, as ``machines.list_all`` gives it, in one process or none."""
    registry = settings.registered_machines(home) if home is not None else {}
    facts = {uuid: settings.machine_facts(path) for uuid, path in registry.items()}
    if not registry or any(f is None or f.uuid != uuid for uuid, f in facts.items()):
        return machines.list_all(vbox, home, node, can_run=can_run)
    running: set[str] = set()
    if can_run:
        text = vbox.run(["list", "runningvms"], "listing running VMs").stdout
        running = {v.uuid for v in listings.list_vms(text)}
    out = []
    for uuid, fact in facts.items():
        assert fact is not None
        state, raw = machines.listed_state(uuid, running, fact)
        out.append(VMSummary(id=uuid, name=fact.name, state=state, raw_state=raw, cpus=fact.cpus,
                             memory_mib=fact.memory_mib, node=node, template=fact.template))
    return out
