"""Moving a VM within one platform: to another node, or another host of the same backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import anyvirt
from anyvirt.errors import InvalidSpec, InvalidState, NotSupported
from anyvirt.host import Host
from anyvirt.model import Capability, MigrationResult, PowerState
from anyvirt.node import Node
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite.base import ContractTests
from anyvirt.testing.suite.spy import recording
from anyvirt.vm import VM


def _target(request: pytest.FixtureRequest) -> Node | Host:
    try:
        target: Node | Host = request.getfixturevalue("anyvirt_migration_target")
    except pytest.FixtureLookupError:
        pytest.fail("the backend declares migration but gives no anyvirt_migration_target fixture")
    return target


def _other_host(request: pytest.FixtureRequest) -> Host:
    """Another host of the same backend: ``anyvirt_other_host`` where the backend gives
    one, else the migration target when it is a host."""
    try:
        other: Host = request.getfixturevalue("anyvirt_other_host")
        return other
    except pytest.FixtureLookupError:
        target = _target(request)
    if not isinstance(target, Host):
        pytest.skip("the backend moves VMs between nodes of one host and gives no "
                    "anyvirt_other_host to move one to")
    return target


def _arrived(vm: VM, target: Node | Host) -> None:
    if isinstance(target, Node):
        assert vm.node in (target.id, target.name)
        assert target.host.vms.get(vm.id).node in (target.id, target.name)
    else:
        assert vm.host is target
        assert target.vms.get(vm.name).id == vm.id


@pytest.mark.anyvirt_requires(Capability.VM_CREATE)
class TestMigration(ContractTests):
    @pytest.mark.anyvirt_requires(Capability.COLD_MIGRATION)
    def test_cold(self, request: pytest.FixtureRequest, anyvirt_host: Host,
                  make_vm: Callable[..., VM]) -> None:
        target = _target(request)
        vm = make_vm()
        if isinstance(target, Node) and vm.node in (target.id, target.name):
            pytest.fail("anyvirt_migration_target must be a node other than where new VMs land")
        result = vm.migrate(to=target, live=False)
        assert isinstance(result, MigrationResult)
        assert result.live is False and result.vm_id == vm.id
        _arrived(vm, target)
        assert vm.state is PowerState.STOPPED
        if isinstance(target, Host):
            assert not anyvirt_host.vms.exists(vm.id), "a moved VM leaves its source"

    @pytest.mark.anyvirt_requires(Capability.LIVE_MIGRATION, Capability.START, Capability.POWER_OFF)
    def test_live(self, request: pytest.FixtureRequest, anyvirt_host: Host,
                  make_vm: Callable[..., VM]) -> None:
        target = _target(request)
        vm = make_vm()
        vm.start()
        result = vm.migrate(to=target)  # live by default for a running VM
        assert result.live is True
        _arrived(vm, target)
        assert vm.refresh().state is PowerState.RUNNING
        if isinstance(target, Host):
            assert not anyvirt_host.vms.exists(vm.id)

    @pytest.mark.anyvirt_requires(Capability.LIVE_MIGRATION, Capability.COLD_MIGRATION)
    def test_wrong_state_is_refused(self, request: pytest.FixtureRequest,
                                    make_vm: Callable[..., VM]) -> None:
        target = _target(request)
        vm = make_vm()
        with pytest.raises(InvalidState):
            vm.migrate(to=target, live=True)  # it is stopped
        assert vm.refresh().state is PowerState.STOPPED


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.COLD_MIGRATION)
class TestMoveRefusals(ContractTests):
    """The gate's move prelude refuses with the same error type on every backend, before
    anything is sent (the driver's migrate primitive re-checks none of it)."""

    def test_a_host_of_another_backend_is_invalid_spec(
            self, anyvirt_host: Host, make_vm: Callable[..., VM]) -> None:
        if anyvirt_host.backend == "memory":
            pytest.skip("the other backend here is memory itself")
        vm = make_vm()
        with anyvirt.connect(f"memory://{unique_name('elsewhere')}") as elsewhere, \
                recording(anyvirt_host) as calls, pytest.raises(InvalidSpec, match="cross-platform"):
            vm.migrate(to=elsewhere, live=False)
        assert calls == []
        assert anyvirt_host.vms.get(vm.id).state is PowerState.STOPPED

    def test_an_endpoint_this_one_cannot_reach_is_not_supported(
            self, request: pytest.FixtureRequest, anyvirt_host: Host,
            make_vm: Callable[..., VM]) -> None:
        try:
            unreachable: Host = request.getfixturevalue("anyvirt_unreachable_host")
        except pytest.FixtureLookupError:
            pytest.skip("the backend reaches every endpoint of its kind (can_reach)")
        vm = make_vm()
        with recording(anyvirt_host) as calls, pytest.raises(NotSupported) as refused:
            vm.migrate(to=unreachable, live=False)
        assert refused.value.capability is Capability.COLD_MIGRATION
        assert calls == []
        assert anyvirt_host.vms.get(vm.id).name == vm.name

    @pytest.mark.anyvirt_requires(Capability.LINKED_CLONE)
    def test_a_linked_clone_and_its_original_stay(
            self, request: pytest.FixtureRequest, anyvirt_host: Host,
            make_vm: Callable[..., VM]) -> None:
        other = _other_host(request)
        vm = make_vm()
        clone = make_vm.track(vm.clone(unique_name("linked"), linked=True))  # type: ignore[attr-defined]
        # a platform that links the clone to a snapshot it takes of the original (VirtualBox)
        # and moves no snapshots refuses the original for those first
        snapshots_first = Capability.SNAPSHOTS in anyvirt_host.capabilities and bool(
            vm.snapshots.list()) and Capability.COLD_MIGRATION_SNAPSHOTS not in (
            anyvirt_host.capabilities)
        with recording(anyvirt_host) as calls:
            with pytest.raises(InvalidState, match="is a linked clone"):
                clone.migrate(to=other, live=False)
            with pytest.raises(NotSupported if snapshots_first else InvalidState,
                               match="snapshots" if snapshots_first else "linked clones use"):
                vm.migrate(to=other, live=False)
        assert calls == []
        assert anyvirt_host.vms.get(clone.id).name == clone.name
        assert not other.vms.exists(clone.name) and not other.vms.exists(vm.name)
