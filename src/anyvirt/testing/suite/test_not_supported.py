"""For every capability a backend does not declare: ``NotSupported``, and nothing sent."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from anyvirt.deployment import Identity
from anyvirt.errors import NotSupported
from anyvirt.host import Host
from anyvirt.model import Capability, DiskSpec
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.probes import cancel_a_running_task
from anyvirt.testing.suite.base import ContractTests
from anyvirt.testing.suite.spy import recording
from anyvirt.vm import VM

Attempt = Callable[[Host, Callable[[], VM], Any], object]


def _create_from_image(host: Host, _vm: Callable[[], VM], spec_for: Any) -> object:
    with tempfile.NamedTemporaryFile(suffix=".img") as image:
        image.write(b"\0" * 512)
        image.flush()
        spec = spec_for(unique_name("img"))
        import attrs

        return host.vms.create(attrs.evolve(spec, disks=[DiskSpec(image=image.name)]))


def _other_node(host: Host) -> Any:
    nodes = host.nodes.list()
    return nodes[-1]


def _cancel(host: Host, _vm: Callable[[], VM], _spec: Any) -> object:
    # a task of this host that has not finished: cancel must say NotSupported, not pretend
    return cancel_a_running_task(host)


ATTEMPTS: dict[Capability, Attempt] = {
    Capability.VM_CREATE: lambda h, vm, spec: h.vms.create(spec(unique_name("ns"))),
    Capability.VM_CREATE_FROM_IMAGE: _create_from_image,
    Capability.VM_DELETE: lambda h, vm, spec: vm().delete(),
    Capability.START: lambda h, vm, spec: vm().start(),
    Capability.STOP: lambda h, vm, spec: vm().stop(),
    Capability.POWER_OFF: lambda h, vm, spec: vm().stop(force=True),
    Capability.REBOOT: lambda h, vm, spec: vm().reboot(),
    Capability.RESET: lambda h, vm, spec: vm().reset(),
    Capability.PAUSE: lambda h, vm, spec: vm().pause(),
    Capability.SUSPEND: lambda h, vm, spec: vm().suspend(),
    Capability.RECONFIGURE: lambda h, vm, spec: vm().reconfigure(cpus=2),
    Capability.SNAPSHOTS: lambda h, vm, spec: vm().snapshots.create("ns"),
    Capability.FULL_CLONE: lambda h, vm, spec: vm().clone(unique_name("ns")),
    Capability.LINKED_CLONE: lambda h, vm, spec: vm().clone(unique_name("ns"), linked=True),
    Capability.COLD_MIGRATION: lambda h, vm, spec: vm().migrate(to=_other_node(h), live=False),
    Capability.LIVE_MIGRATION: lambda h, vm, spec: vm().migrate(to=_other_node(h), live=True),
    Capability.TEMPLATES: lambda h, vm, spec: vm().mark_template(),
    Capability.DELETE_KEEP_DISKS: lambda h, vm, spec: vm().delete(disks=False),
    Capability.MAINTENANCE_MODE: lambda h, vm, spec: h.evacuate(h.nodes.list()[0], maintenance=True),
    Capability.TASK_CANCEL: _cancel,
    Capability.NODE_RECOVERY: lambda h, vm, spec: h.recover(h.nodes.list()[0]),
    Capability.NODE_RECOVERY_RESTART: lambda h, vm, spec: h.recover(h.nodes.list()[0],
                                                                    to=_other_node(h)),
    Capability.IDENTITY: lambda h, vm, spec: h.vms.create(
        attrs.evolve(spec(unique_name("ns")), identity=Identity())),
    Capability.IDENTITY_USER_DATA: lambda h, vm, spec: h.vms.create(
        attrs.evolve(spec(unique_name("ns")),
                     identity=Identity(user_data="#cloud-config\npackages: [htop]\n"))),
    Capability.GUEST_ADDRESSES: lambda h, vm, spec: vm().addresses(),
    Capability.CONSOLE: lambda h, vm, spec: vm().console(),
    Capability.DISK_EXPORT: lambda h, vm, spec: vm().backup(
        f"{tempfile.gettempdir()}/{unique_name('ns')}.avbk"),
}

# Capabilities that change how an operation behaves rather than whether it exists:
# LIVE_RECONFIGURE (reconfigure of a running VM applies to the config instead, and says so),
# and the refinements that need a VM in a certain state first, each proven below:
# MEMORY_SNAPSHOTS, CLONE_RUNNING and SNAPSHOT_DISK_EXPORT (a running VM), *_MIGRATION_SNAPSHOTS
# (a VM with one). CHANGED_BLOCKS only makes a repository's backup read less.
BEHAVIOURAL = {Capability.CHANGED_BLOCKS,
               Capability.LIVE_RECONFIGURE, Capability.MEMORY_SNAPSHOTS, Capability.CLONE_RUNNING,
               Capability.COLD_MIGRATION_SNAPSHOTS, Capability.LIVE_MIGRATION_SNAPSHOTS,
               Capability.TEMPLATE_TO_VM, Capability.LINKED_CLONE_OF_TEMPLATE,
               Capability.SNAPSHOT_DISK_EXPORT}


class TestNotSupported(ContractTests):
    @pytest.mark.parametrize("capability", sorted(set(Capability) - BEHAVIOURAL, key=str))
    def test_undeclared_capability_raises_not_supported(
        self, capability: Capability, anyvirt_host: Host,
        anyvirt_vm_spec: Callable[[str], Any], request: pytest.FixtureRequest,
    ) -> None:
        if capability in anyvirt_host.capabilities:
            pytest.skip(f"{anyvirt_host.backend} declares {capability}: its contract tests cover it")
        made: list[VM] = []

        def subject() -> VM:
            if made:
                return made[0]
            if Capability.VM_CREATE in anyvirt_host.capabilities:
                make = request.getfixturevalue("make_vm")
                made.append(make("ns"))
            else:
                vms = anyvirt_host.vms.list()
                if not vms:
                    pytest.fail("a backend that cannot create VMs must list at least one to test on")
                made.append(vms[0])
            return made[0]

        if capability is not Capability.VM_CREATE and capability is not Capability.VM_CREATE_FROM_IMAGE:
            subject()  # make it outside the recording
        with recording(anyvirt_host) as calls, pytest.raises(NotSupported) as info:
            ATTEMPTS[capability](anyvirt_host, subject, anyvirt_vm_spec)
        assert calls == [], f"the driver was asked to {calls} although {capability} is not declared"
        assert info.value.backend in (anyvirt_host.backend, "this backend")
        missing = {str(c) for c in set(Capability) - anyvirt_host.capabilities}
        assert str(info.value.capability) in missing, "it names a capability the host lacks"

    def test_every_capability_has_an_attempt(self) -> None:
        assert set(ATTEMPTS) | BEHAVIOURAL == set(Capability)

    def test_memory_snapshot_when_undeclared(
        self, anyvirt_host: Host, request: pytest.FixtureRequest
    ) -> None:
        caps = anyvirt_host.capabilities
        if Capability.MEMORY_SNAPSHOTS in caps:
            pytest.skip(f"{anyvirt_host.backend} declares memory snapshots")
        needed = {Capability.VM_CREATE, Capability.START, Capability.POWER_OFF, Capability.SNAPSHOTS}
        if not needed <= caps:
            pytest.skip("memory snapshots need a VM that can be created, started and snapshotted")
        vm = request.getfixturevalue("make_vm")("ns")
        vm.start()
        with recording(anyvirt_host) as calls, pytest.raises(NotSupported):
            vm.snapshots.create("mem", memory=True)
        assert calls == []

    def test_clone_of_running_vm_when_undeclared(
        self, anyvirt_host: Host, request: pytest.FixtureRequest
    ) -> None:
        caps = anyvirt_host.capabilities
        if Capability.CLONE_RUNNING in caps:
            pytest.skip(f"{anyvirt_host.backend} declares clones of running VMs")
        needed = {Capability.VM_CREATE, Capability.START, Capability.POWER_OFF, Capability.FULL_CLONE}
        if not needed <= caps:
            pytest.skip("this needs a VM that can be created, started and cloned when stopped")
        vm = request.getfixturevalue("make_vm")("ns")
        vm.start()
        with recording(anyvirt_host) as calls, pytest.raises(NotSupported) as info:
            vm.clone(unique_name("ns"))
        assert calls == []
        assert info.value.capability is Capability.CLONE_RUNNING

    @pytest.mark.parametrize("live", [False, True], ids=["cold", "live"])
    def test_migration_with_snapshots_when_undeclared(
        self, live: bool, anyvirt_host: Host, request: pytest.FixtureRequest
    ) -> None:
        caps = anyvirt_host.capabilities
        refined = Capability.LIVE_MIGRATION_SNAPSHOTS if live else Capability.COLD_MIGRATION_SNAPSHOTS
        base = Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION
        if refined in caps:
            pytest.skip(f"{anyvirt_host.backend} declares {refined}")
        needed = {Capability.VM_CREATE, Capability.SNAPSHOTS, base} | (
            {Capability.START, Capability.POWER_OFF} if live else set())
        if not needed <= caps:
            pytest.skip(f"this needs {', '.join(sorted(c.value for c in needed - caps))}")
        vm = request.getfixturevalue("make_vm")("ns")
        vm.snapshots.create("before-move")
        if live:
            vm.start()
        target = request.getfixturevalue("anyvirt_migration_target")
        with recording(anyvirt_host) as calls, pytest.raises(NotSupported) as info:
            vm.migrate(to=target, live=live)
        assert calls == []
        assert info.value.capability is refined

    @pytest.mark.parametrize("refined", [Capability.TEMPLATE_TO_VM, Capability.LINKED_CLONE_OF_TEMPLATE],
                             ids=str)
    def test_template_operations_when_undeclared(
        self, refined: Capability, anyvirt_host: Host, request: pytest.FixtureRequest
    ) -> None:
        caps = anyvirt_host.capabilities
        implied = {refined} | ({Capability.LINKED_CLONE} if refined is Capability.LINKED_CLONE_OF_TEMPLATE
                               else set())
        if caps & implied:
            pytest.skip(f"{anyvirt_host.backend} declares {refined}")
        if not {Capability.VM_CREATE, Capability.TEMPLATES} <= caps:
            pytest.skip("this needs a VM that can be created and made a template")
        vm = request.getfixturevalue("make_vm")("ns")
        vm.mark_template()
        attempt = (vm.convert_to_vm if refined is Capability.TEMPLATE_TO_VM
                   else lambda: vm.clone(unique_name("ns"), linked=True))
        with recording(anyvirt_host) as calls, pytest.raises(NotSupported) as info:
            attempt()
        assert calls == []
        assert info.value.capability in implied
