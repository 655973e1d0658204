"""Fault reports that say what is known, against vcsim behind a faulty TCP proxy.

* a write whose answer was lost is ``OutcomeUnknown`` (a ``ConnectionFailed``)
  naming the VM to check, and the change really had been made;
* a create whose cleanup fails too raises the create's error, the cleanup's
  failure attached as a note;
* a read on a pooled connection the server had closed, or after the server
  restarted, is sent again (once) and succeeds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from anyvirt_vsphere.testbed.vcsim import Vcsim
from fault_proxy_support import FaultProxy

import anyvirt
from anyvirt.errors import ConnectionFailed, OutcomeUnknown
from anyvirt.host import Host
from anyvirt.model import DiskSpec, PowerState, VMSpec
from anyvirt.vm import VM


def _vcsim(tmp_path_factory: pytest.TempPathFactory) -> Vcsim:
    return Vcsim(hosts=2, standalone_hosts=0, pools=0, vms=1, tls=False,
                 workdir=tmp_path_factory.mktemp("vcsim-faults"))


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with _vcsim(tmp_path_factory) as running:
        yield running


@pytest.fixture
def proxy(sim: Vcsim) -> Iterator[FaultProxy]:
    faulty = FaultProxy((sim.host, sim.port))
    yield faulty
    faulty.close()


def _connect(sim: Vcsim, port: int) -> Host:
    return anyvirt.connect(f"vsphere+http://{sim.username}@127.0.0.1:{port}", password=sim.password,
                           timeout=10)


@pytest.fixture
def host(sim: Vcsim, proxy: FaultProxy) -> Iterator[Host]:
    with _connect(sim, proxy.port) as connected:
        yield connected


@pytest.fixture
def direct(sim: Vcsim) -> Iterator[Host]:
    """A second connection that bypasses the proxy: it sees what really happened."""
    with _connect(sim, sim.port) as connected:
        yield connected


@pytest.fixture
def vm(host: Host, direct: Host) -> Iterator[VM]:
    name = f"fault-{uuid.uuid4().hex[:6]}"
    made = host.vms.create(VMSpec(name=name, memory_mib=64, disks=[DiskSpec(size_gib=0.01)],
                                  node="DC0_C0_H0"))
    yield made
    if direct.vms.exists(name):
        seen = direct.vms.get(name)
        if seen.state is not PowerState.STOPPED:
            seen.stop(force=True)
        seen.delete()


def _unknown(proxy: FaultProxy, marker: bytes, action: object) -> OutcomeUnknown:
    assert callable(action)
    proxy.cut_answer(marker)
    with pytest.raises(OutcomeUnknown) as caught:
        action()
    assert proxy.cuts == 1
    assert isinstance(caught.value, ConnectionFailed)
    return caught.value


def test_a_power_on_whose_answer_was_lost_is_outcome_unknown_and_did_happen(
        proxy: FaultProxy, vm: VM, direct: Host) -> None:
    error = _unknown(proxy, b"PowerOnVM_Task", vm.start)
    assert error.vm_id == vm.id and error.vm_name == vm.name
    assert vm.id in str(error)
    assert direct.vms.get(vm.id).state is PowerState.RUNNING


def test_a_snapshot_whose_answer_was_lost_is_outcome_unknown_and_exists(
        proxy: FaultProxy, vm: VM, direct: Host) -> None:
    error = _unknown(proxy, b"CreateSnapshot", lambda: vm.snapshots.create("before"))
    assert error.vm_id == vm.id
    assert [s.name for s in direct.vms.get(vm.id).snapshots.list()] == ["before"]


def test_a_relocation_whose_answer_was_lost_is_outcome_unknown_and_moved(
        proxy: FaultProxy, host: Host, vm: VM, direct: Host) -> None:
    error = _unknown(proxy, b"RelocateVM_Task", lambda: vm.migrate(to=host.nodes.get("DC0_C0_H1")))
    assert error.vm_id == vm.id
    assert direct.vms.get(vm.id).node in ("DC0_C0_H1", direct.nodes.get("DC0_C0_H1").id)


def test_a_delete_whose_answer_was_lost_is_outcome_unknown_and_deleted(
        proxy: FaultProxy, vm: VM, direct: Host) -> None:
    error = _unknown(proxy, b"Destroy_Task", vm.delete)
    assert error.vm_id == vm.id
    assert not direct.vms.exists(vm.id)


def test_a_create_whose_cleanup_fails_too_raises_its_own_error_with_a_note(
        proxy: FaultProxy, host: Host, direct: Host) -> None:
    name = f"fault-{uuid.uuid4().hex[:6]}"
    proxy.cut_answer(b"CreateVM_Task", then_gone=True)  # the cleanup cannot reach it either
    try:
        with pytest.raises(OutcomeUnknown) as caught:
            host.vms.create(VMSpec(name=name, memory_mib=64, disks=[DiskSpec(size_gib=0.01)]))
        error = caught.value
        assert error.vm_name == name
        assert f"creating VM {name!r}" in str(error)
        notes = getattr(error, "__notes__", [])
        assert any("cleanup also failed" in note and name in note for note in notes), notes
    finally:
        proxy.refusing = False
        if direct.vms.exists(name):  # the create had been carried out: the outcome was unknown
            direct.vms.get(name).delete()


def test_a_read_on_a_connection_the_server_closed_is_sent_again(proxy: FaultProxy,
                                                                   host: Host) -> None:
    before = {v.id for v in host.vms.list()}
    proxy.drop_all()  # the pooled keep-alive connection is dead now
    assert {v.id for v in host.vms.list()} == before


def test_a_read_after_the_server_restarted_logs_in_again_and_succeeds(
        sim: Vcsim, tmp_path_factory: pytest.TempPathFactory) -> None:
    with _vcsim(tmp_path_factory) as first:
        proxy = FaultProxy((first.host, first.port))
        try:
            with _connect(first, proxy.port) as host:
                assert len(host.vms.list()) == first.expected_vm_count
                with _vcsim(tmp_path_factory) as second:  # a restarted server, same model
                    proxy.upstream = (second.host, second.port)
                    first.stop()
                    assert len(host.vms.list()) == second.expected_vm_count
        finally:
            proxy.close()
