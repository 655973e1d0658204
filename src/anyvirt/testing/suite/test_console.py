"""The serial console (``vm.console()``): what every backend that declares it must do.

What a guest writes differs per platform (a real guest's boot, PVE's terminal banner, the
memory backend's echo), so this asserts the console's rules, not the guest's words: only a
VM that runs has one; closing detaches and frees it; it ends when
the VM stops; input of the wrong type is refused before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from anyvirt.console import Console
from anyvirt.errors import ConsoleClosed, InvalidSpec, InvalidState
from anyvirt.model import Capability
from anyvirt.testing.suite.base import ContractTests
from anyvirt.vm import VM

#: how long a console may take to show that its VM stopped (a real line drains first)
END_WITHIN = 30.0


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.START, Capability.POWER_OFF,
                              Capability.CONSOLE)
class TestConsole(ContractTests):
    def test_a_stopped_vm_has_no_console(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm("con")
        with pytest.raises(InvalidState, match="start it first"):
            vm.console()

    def test_closing_detaches_and_frees_the_console(self, make_vm: Callable[..., VM]) -> None:
        # whether a second session is refused while one is open is the platform's (libvirt
        # refuses it, as virsh console does; PVE's terminal proxy queues it): not asserted here
        vm = make_vm("con1")
        vm.start()
        with vm.console() as first:
            assert isinstance(first, Console) and not first.closed
            assert isinstance(first.read(timeout=0.1), bytes)
        assert first.closed
        first.close()  # twice is harmless
        with pytest.raises(ConsoleClosed):
            first.read(timeout=0)
        with pytest.raises(ConsoleClosed):
            first.write("x")
        with vm.console() as second:
            assert not second.closed
        vm.stop(force=True)

    def test_input_of_the_wrong_type_is_refused(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm("con2")
        vm.start()
        with vm.console() as console:
            with pytest.raises(InvalidSpec, match="bytes or str"):
                console.write(42)  # type: ignore[arg-type]
            with pytest.raises(InvalidSpec, match="seconds"):
                console.read(timeout=-1)
        vm.stop(force=True)

    def test_the_console_ends_when_the_vm_stops(self, make_vm: Callable[..., VM]) -> None:
        vm = make_vm("con3")
        vm.start()
        with vm.console() as console:
            vm.stop(force=True)
            with pytest.raises(ConsoleClosed):
                read_until_it_ends(console)


def read_until_it_ends(console: Console, within: float = END_WITHIN) -> None:
    """Read on until the console ends (ConsoleClosed); output still in flight drains first.
    Returns (and the caller's ``pytest.raises`` fails) if it has not ended ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        console.read(timeout=0.2)
