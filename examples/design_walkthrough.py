"""Every line of the API contract in DESIGN.md, run in order against one URI.

    .venv/bin/python examples/design_walkthrough.py [URI] [OTHER_URI]

Defaults to two memory:// hosts; pass a libvirt or vSphere URI to walk the
same script there (steps the connection does not support print "not
supported" instead of failing). OTHER_URI is the host for "another Host"
and cross-platform moves. Everything made is removed at the end.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import anyvirt
from anyvirt import Capability, DiskSpec, NicSpec, PowerState, VMSpec


def step(what: str, action: Callable[[], object]) -> object:
    try:
        result = action()
    except anyvirt.NotSupported as exc:
        print(f"  {what:<34} not supported ({exc.capability})")
        return None
    print(f"  {what:<34} ok {_short(result)}")
    return result


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 70 else text[:67] + "..."


def walk(uri: str, other_uri: str) -> None:
    tag = uuid.uuid4().hex[:6]
    made: list[anyvirt.VM] = []
    with anyvirt.connect(uri) as host, anyvirt.connect(other_uri) as other:
        print(f"{host!r} ({host.backend})")
        step("host.info()", host.info)
        step("host.capabilities", lambda: sorted(c.value for c in host.capabilities)[:3])
        step("host.supports(LIVE_MIGRATION)", lambda: host.supports(Capability.LIVE_MIGRATION))
        step("host.nodes.list()", host.nodes.list)
        step("host.vms.list()", host.vms.list)
        vm = host.vms.create(VMSpec(name=f"web1-{tag}", cpus=1, memory_mib=128,
                                    disks=[DiskSpec(size_gib=0.0625)], nics=[NicSpec()]))
        made.append(vm)
        step("host.vms.create(VMSpec(...))", lambda: vm)
        step("host.vms.get(name)", lambda: host.vms.get(vm.name))
        step("vm.id, vm.name, vm.state", lambda: (vm.id, vm.name, vm.state))
        step("vm.info()", lambda: vm.info().disks)
        step("vm.reconfigure(memory_mib=256)", lambda: vm.reconfigure(memory_mib=256))
        step("vm.start()", vm.start)
        step("vm.pause(); vm.resume()", lambda: (vm.pause(), vm.resume()))
        step("vm.reboot()", vm.reboot)
        step("vm.reset()", vm.reset)
        snap = step("vm.snapshots.create(memory=False)",
                    lambda: vm.snapshots.create("pre-upgrade", description=""))
        if isinstance(snap, anyvirt.Snapshot):
            step("vm.snapshots.list()", vm.snapshots.list)
            step("vm.snapshots.get(name)", lambda: vm.snapshots.get("pre-upgrade"))
            step("vm.snapshots.current", lambda: vm.snapshots.current)
            step("snap.parent; snap.children", lambda: (snap.parent, snap.children))
            step("snap.revert()", snap.revert)
            step("snap.delete()", snap.delete)
        if vm.refresh().state is not PowerState.STOPPED:
            step("vm.stop(force=True)", lambda: vm.stop(force=True))
        clone = step("vm.clone(linked=True)", lambda: vm.clone(f"web2-{tag}", linked=True))
        if isinstance(clone, anyvirt.VM):
            made.append(clone)
        nodes = [n for n in host.nodes.list() if n.id != vm.refresh().node]
        if nodes:
            step("vm.migrate(to=node)", lambda: vm.migrate(to=nodes[0], live=False))
        if nodes and host.supports(Capability.LIVE_MIGRATION):
            step("host.evacuate(node, to=[...])",
                 lambda: host.evacuate(nodes[0], to=[n for n in host.nodes.list() if n != nodes[0]]))
        step("vm.start(wait=False) -> Task", lambda: vm.start(wait=False).wait(120))
        step("vm.suspend()", vm.suspend)
        step("vm.stop(force=True)", lambda: vm.stop(force=True))
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "web1.avbk"
            if step("vm.backup(path)", lambda: vm.backup(archive)) is not None:
                restored = step("host.restore(path, name=)",
                                lambda: host.restore(archive, name=f"web1-restored-{tag}"))
                if isinstance(restored, anyvirt.VM):
                    made.append(restored)
        plan = step("anyvirt.plan_migration(vm, to=)", lambda: anyvirt.plan_migration(vm, to=other))
        if plan is not None:
            result = step("anyvirt.migrate(vm, to=)",
                          lambda: anyvirt.migrate(vm, to=other, name=f"web1-moved-{tag}"))
            if isinstance(result, anyvirt.MigrationResult):
                other.vms.get(result.vm_id).delete()
        step("vm.native", lambda: type(vm.native).__name__)
        for each in reversed(made):
            each.refresh()
            if each.state not in (PowerState.STOPPED, PowerState.SUSPENDED):
                each.stop(force=True)
            each.delete(disks=True)
        print(f"  {'vm.delete(disks=True)':<34} ok ({len(made)} VMs)")


def main(argv: list[str]) -> int:
    uri = argv[0] if argv else "memory://walkthrough"
    other = argv[1] if len(argv) > 1 else "memory://walkthrough-elsewhere"
    walk(uri, other)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
