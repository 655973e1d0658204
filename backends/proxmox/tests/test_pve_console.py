"""The serial console on Proxmox VE: PVE's terminal proxy and its websocket, on fakepve.

fakepve's terminal speaks PVE's protocol (the ``user:ticket`` handshake, ``OK``, input as
``0:<bytes>:<data>`` messages) and echoes what it is sent, as a guest's line discipline
would; it records the raw messages, so the wire format is asserted, not only the echo.
Every request (``termproxy`` included) is checked against the official schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakepve import FakePve
from pve_support import Traffic

from anyvirt import VMSpec
from anyvirt.errors import ConnectionFailed, InvalidState
from anyvirt.host import Host
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM


@pytest.fixture
def running(pve_host: Host) -> Iterator[VM]:
    vm = pve_host.vms.create(VMSpec(name=unique_name("pcon"), cpus=1, memory_mib=256))
    vm.start()
    try:
        yield vm
    finally:
        vm.stop(force=True)
        vm.delete()


def test_typed_input_reaches_pve_s_terminal_in_its_wire_format(running: VM, pve: FakePve) -> None:
    pve.termdata.clear()
    with running.console() as console:
        console.expect("starting serial terminal on interface serial0", timeout=10)
        console.write("héllo\r")
        assert console.expect("héllo\r", timeout=10).endswith("héllo\r".encode())
    # the length counts the UTF-8 bytes, as PVE's proxy reads them
    assert pve.termdata == ["0:7:héllo\r"]


def test_a_vm_without_a_socket_serial_port_is_refused_before_the_proxy(
        pve_host: Host, traffic: Traffic) -> None:
    vm = pve_host.vms.create(VMSpec(name=unique_name("pcon"), cpus=1, memory_mib=256))
    try:
        pve_host.driver.inventory.session.put(  # type: ignore[attr-defined]
            ("nodes", vm.info().node, "qemu", vm.id, "config"), "drop serial0", delete="serial0")
        vm.start()
        with pytest.raises(InvalidState, match="serial0: socket"):
            vm.console()
        assert not [p for p in traffic.paths("POST") if p.endswith("/termproxy")]
    finally:
        vm.stop(force=True)
        vm.delete()


def test_a_refused_terminal_is_a_connection_error(running: VM, pve: FakePve) -> None:
    pve.refuse_terminal = True
    try:
        with pytest.raises(ConnectionFailed, match="refused"):
            running.console()
    finally:
        pve.refuse_terminal = False
