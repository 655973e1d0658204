"""Platform output is data, never structure: hostile user-writable values on any backend.

Names, descriptions, snapshot names and snapshot descriptions are written by
users, then read back by parsing what the platform prints (VBoxManage's
``key=value`` lines, libvirt's domain XML, PVE's JSON and config lines,
pyVmomi's objects). A value that looks like that output (a ``UUID=<another
VM's id>`` line, ``</description><uuid>...``, ``"vmid": 100``, quotes,
backslashes, escape sequences spelled out) must stay a value: every VM keeps
its own id, name, state, memory and CPUs; ``delete`` removes the right VM; the
snapshot tree stays right; and the value reads back as written. Where a
backend's format cannot carry a value, it is refused with ``InvalidSpec``
before anything is sent (the spy proves that).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator

import pytest

from anyvirt.errors import InvalidSpec
from anyvirt.host import Host
from anyvirt.model import Capability, DiskSpec, PowerState, VMSpec, evolve
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite.base import ContractTests
from anyvirt.testing.suite.spy import recording
from anyvirt.vm import VM


def hostile_descriptions(vid: str, vname: str) -> list[str]:
    """Multi-line free text shaped like each platform's output, naming the VM ``vid``/``vname``
    (another VM's: a parser that takes it for structure acts on that VM)."""
    return [
        # VBoxManage --machinereadable: a closing quote, then settings of another VM
        f'x"\nUUID="{vid}"\nname="{vname}"\nVMState="running"\nmemory=0\ncpus=64\n'
        f'CfgFile="/etc/shadow"\nzz=',
        f"x\nUUID={vid}\nVMState=running\nmemory=1\nzz=",
        # libvirt domain XML / vSphere SOAP: leave the element and open others
        f"</description><uuid>{vid}</uuid><name>{vname}</name><memory unit='KiB'>1</memory>"
        f"<vcpu>64</vcpu><![CDATA[ ]]> ]]> &amp; &lt;x&gt; &#x41; <!-- <description>",
        # PVE JSON and its config file (key: value lines, [snapshot] sections)
        f'{{"vmid": 100, "name": "{vname}", "status": "running"}}\n"vmid": {vid!r},\n'
        f"name: {vname}\nmemory: 1\ncores: 64\nparent: x\n[{vname}]\ndescription: y\n#z",
        # quotes, backslashes, escapes spelled out, format strings, shell, padding
        "  'single' \"double\" \\ \\\\ \\n \\\" \\x1b]0;title\\x07 \\u0000 %s %(name)s {0} "
        "${HOME} $(id) `id` ;|&\ttab\n\nafter a blank line  ",
        # non-Latin text, the characters XML and JSON escape, an = at both ends
        "=ünïcødé ☃ 𝄞 ← \u2028 \u00a0 <>&'\" =",
    ]


def hostile_names(vid: str, vname: str) -> list[str]:
    """One-line names shaped like platform output, naming ``vid``/``vname`` (a backend may
    refuse some)."""
    return [
        f'x" UUID={vid}',
        f"</name><uuid>{vid}</uuid>",
        f'{{"vmid": 100, "name": "{vname}"}}'[:80],
        "a'b\"c\\d $(id) %s %2f%25 `x`",
        f"name={vname}",
    ]


@contextlib.contextmanager
def _refused_or_made(host: Host) -> Iterator[list[str]]:
    """Run a create: an ``InvalidSpec`` is fine only if no driver call was made."""
    with recording(host) as calls:
        try:
            yield calls
        except InvalidSpec:
            assert calls == [], f"refused with InvalidSpec after sending {calls}"


def _assert_is(host: Host, vm: VM, name: str, cpus: int, memory_mib: int,
               state: PowerState = PowerState.STOPPED) -> None:
    """``vm`` is what the platform says it is, by every way of reading it."""
    rows = {row.id: row for row in host.vms.list()}
    assert vm.id in rows, f"{name!r} ({vm.id}) is missing from the listing"
    row = rows[vm.id]
    assert (row.name, row.state, row.cpus, row.memory_mib) == (name, state, cpus, memory_mib)
    assert [r.id for r in rows.values() if r.name == name] == [vm.id]
    assert host.vms.get(name).id == vm.id
    got = host.vms.get(vm.id)
    assert (got.name, got.state, got.cpus, got.memory_mib) == (name, state, cpus, memory_mib)
    info = vm.info()
    assert (info.id, info.name, info.state, info.cpus, info.memory_mib) == (
        vm.id, name, state, cpus, memory_mib)


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.VM_DELETE)
class TestHostileValues(ContractTests):
    def _victim(self, make_vm: Callable[..., VM]) -> VM:
        return make_vm("victim")

    def test_descriptions_are_data(self, anyvirt_host: Host, make_vm: Callable[..., VM],
                                   anyvirt_vm_spec: Callable[[str], VMSpec]) -> None:
        victim = self._victim(make_vm)
        shape = (victim.name, victim.cpus, victim.memory_mib)
        for text in hostile_descriptions(victim.id, victim.name):
            spec = anyvirt_vm_spec(unique_name("evil"))
            evil = None
            with _refused_or_made(anyvirt_host):
                evil = make_vm.track(anyvirt_host.vms.create(  # type: ignore[attr-defined]
                    evolve(spec, description=text)))
            if evil is None:
                continue
            assert evil.id != victim.id
            _assert_is(anyvirt_host, evil, spec.name, spec.cpus, spec.memory_mib)
            assert evil.info().description == text
            _assert_is(anyvirt_host, victim, *shape)
            evil.delete(disks=True)
            assert evil.id not in {v.id for v in anyvirt_host.vms.list()}
            _assert_is(anyvirt_host, victim, *shape)

    def test_names_are_data(self, anyvirt_host: Host, make_vm: Callable[..., VM],
                            anyvirt_vm_spec: Callable[[str], VMSpec]) -> None:
        victim = self._victim(make_vm)
        shape = (victim.name, victim.cpus, victim.memory_mib)
        for name in hostile_names(victim.id, victim.name):
            spec = anyvirt_vm_spec(name)
            evil = None
            with _refused_or_made(anyvirt_host):
                evil = make_vm.track(anyvirt_host.vms.create(spec))  # type: ignore[attr-defined]
            if evil is None:
                continue
            assert evil.id != victim.id and evil.name == name
            _assert_is(anyvirt_host, evil, name, spec.cpus, spec.memory_mib)
            _assert_is(anyvirt_host, victim, *shape)
            evil.delete(disks=True)
            assert evil.id not in {v.id for v in anyvirt_host.vms.list()}
            _assert_is(anyvirt_host, victim, *shape)

    @pytest.mark.anyvirt_requires(Capability.SNAPSHOTS)
    def test_snapshot_names_and_descriptions_are_data(
            self, anyvirt_host: Host, make_vm: Callable[..., VM]) -> None:
        victim = self._victim(make_vm)
        kept = victim.snapshots.create("kept", description="the victim's own")
        vm = make_vm("snapped")
        shape = (vm.name, vm.cpus, vm.memory_mib)
        made = []
        values = hostile_descriptions(victim.id, victim.name)
        # plain names carry every hostile description, on backends that refuse hostile names too
        names = [f"desc-{index}" for index in range(len(values))]
        # "current": what PVE calls the "you are here" row of its snapshot listing
        names += [*hostile_names(victim.id, victim.name), kept.id, f"UUID={kept.id}", "current"]
        for index, name in enumerate(names):
            text = values[index % len(values)]
            with _refused_or_made(anyvirt_host):
                made.append((vm.snapshots.create(name, description=text), name, text))
        for position, (snap, name, text) in enumerate(made):
            again = vm.snapshots.get(snap.id)
            assert (again.id, again.name, again.description) == (snap.id, name, text)
            assert vm.snapshots.get(name).id == snap.id
            parent = again.parent
            assert (parent.id if parent else None) == (made[position - 1][0].id if position else None)
        assert [s.id for s in vm.snapshots.list()] == [s.id for s, _, _ in made]
        if made:
            assert vm.snapshots.current == made[-1][0]
        _assert_is(anyvirt_host, vm, *shape)
        _assert_is(anyvirt_host, victim, victim.name, victim.cpus, victim.memory_mib)
        assert [(s.id, s.name) for s in victim.snapshots.list()] == [(kept.id, "kept")]
        if made:  # deleting a hostile snapshot deletes that one, on that VM
            made[-1][0].delete()
            assert [s.id for s in vm.snapshots.list()] == [s.id for s, _, _ in made[:-1]]
        assert [s.id for s in victim.snapshots.list()] == [kept.id]

    @pytest.mark.anyvirt_requires(Capability.VM_CREATE_FROM_IMAGE)
    def test_an_empty_image_is_named_and_refused_before_anything_is_sent(
            self, anyvirt_host: Host, anyvirt_vm_spec: Callable[[str], VMSpec]) -> None:
        spec = anyvirt_vm_spec(unique_name("empty"))
        handle, image = tempfile.mkstemp(suffix=".img")
        os.close(handle)
        try:
            with recording(anyvirt_host) as calls, pytest.raises(InvalidSpec) as refused:
                anyvirt_host.vms.create(evolve(spec, disks=[DiskSpec(image=image)]))
            assert calls == []
            assert image in str(refused.value) and "empty" in str(refused.value)
            assert "size_gib" not in str(refused.value)
        finally:
            os.unlink(image)
