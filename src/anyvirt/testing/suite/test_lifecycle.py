"""Power state changes, with the same state rules on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anyvirt.errors import InvalidState
from anyvirt.host import Host
from anyvirt.model import Capability, PowerState
from anyvirt.tasks import Task, TaskState
from anyvirt.testing.suite.base import ContractTests
from anyvirt.testing.suite.spy import recording
from anyvirt.vm import VM


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.START, Capability.POWER_OFF)
class TestLifecycle(ContractTests):
    def test_start_and_force_stop(self, anyvirt_host: Host, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        assert vm.start() is vm
        assert vm.state is PowerState.RUNNING
        assert anyvirt_host.vms.get(vm.id).state is PowerState.RUNNING
        vm.stop(force=True)
        assert vm.state is PowerState.STOPPED
        assert anyvirt_host.vms.get(vm.id).state is PowerState.STOPPED

    def test_state_rules(self, anyvirt_host: Host, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        caps = anyvirt_host.capabilities
        actions: dict[Callable[[], object], Capability] = {
            vm.stop: Capability.STOP, vm.reboot: Capability.REBOOT, vm.reset: Capability.RESET,
            vm.pause: Capability.PAUSE, vm.resume: Capability.PAUSE}
        with recording(anyvirt_host) as calls:
            for action, cap in actions.items():
                if cap in caps:  # without it, NotSupported comes first (TestNotSupported)
                    with pytest.raises(InvalidState):
                        action()
        assert calls == []
        vm.start()
        with pytest.raises(InvalidState):
            vm.start()
        assert vm.refresh().state is PowerState.RUNNING

    @pytest.mark.anyvirt_requires(Capability.STOP)
    def test_graceful_stop(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        vm.start()
        try:
            vm.stop(timeout=120)
        except InvalidState as exc:
            # allowed only where a graceful stop needs guest tools that are not running
            assert "force=True" in str(exc)
            assert vm.refresh().state is PowerState.RUNNING
        else:
            assert vm.state is PowerState.STOPPED

    @pytest.mark.anyvirt_requires(Capability.PAUSE)
    def test_pause_and_resume(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        vm.start()
        vm.pause()
        assert vm.state is PowerState.PAUSED
        with pytest.raises(InvalidState):
            vm.pause()
        vm.resume()
        assert vm.state is PowerState.RUNNING

    @pytest.mark.anyvirt_requires(Capability.SUSPEND)
    def test_suspend_then_start(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        vm.start()
        vm.suspend()
        assert vm.state is PowerState.SUSPENDED
        vm.start()
        assert vm.state is PowerState.RUNNING

    @pytest.mark.anyvirt_requires(Capability.RESET)
    def test_reset_keeps_it_running(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        vm.start()
        vm.reset()
        assert vm.state is PowerState.RUNNING

    def test_wait_false_returns_a_task(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm()
        task = vm.start(wait=False)
        assert isinstance(task, Task)
        result = task.wait(timeout=300)
        assert result is vm
        assert task.state is TaskState.SUCCEEDED and task.done
        assert task.progress == 100.0
        assert vm.state is PowerState.RUNNING
        progress: list[float | None] = []
        vm.stop(force=True, on_progress=lambda t: progress.append(t.progress))
        assert progress and progress[-1] == 100.0
