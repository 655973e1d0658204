"""Recovery of a failed ESXi host's VMs on a simulated vCenter (``host.recover``).

The host failure is a STAND-IN: vcsim 0.24.2 cannot disconnect a host, so the project's
patch 0005 lets a test mark one notResponding (``Vcsim.set_host_state``), as a vCenter
reports a host that stopped answering, and disconnects its VMs. Everything else is the
simulator's own API: UnregisterVM, Folder.RegisterVM_Task, PowerOnVM_Task.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt
from anyvirt.errors import InvalidState
from anyvirt.host import Host
from anyvirt.model import DiskSpec, NicSpec, PowerState, VMSpec
from anyvirt.recovery import RecoveredFrom
from anyvirt.testing.suite.spy import recording

FAILED = "DC0_C0_H0"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Vcsim]:
    """A private vCenter: DC0_C0 with three hosts sharing LocalDS_0, no model VMs to move."""
    with Vcsim(hosts=3, standalone_hosts=0, vms=0, workdir=tmp_path / "vcsim") as simulator:
        yield simulator


@pytest.fixture
def host(sim: Vcsim) -> Iterator[Host]:
    with anyvirt.connect(sim.anyvirt_uri_with_ca, password=sim.password) as h:
        yield h


def _spec(name: str, storage: str | None = None) -> VMSpec:
    return VMSpec(name=name, memory_mib=64, node=FAILED, nics=[NicSpec()],
                  disks=[DiskSpec(size_gib=0.0625, storage=storage)])


def _local_datastore(host: Host, directory: Path) -> str:
    """A datastore that only the host to fail mounts (its own disk)."""
    directory.mkdir()
    esx = next(h for h in host.native.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host
               if h.name == FAILED)
    esx.configManager.datastoreSystem.CreateLocalDatastore("H0-local", str(directory))
    return "H0-local"


def test_failed_host_vms_on_shared_datastores_come_back_on_its_cluster(
        sim: Vcsim, host: Host, tmp_path: Path) -> None:
    running = host.vms.create(_spec("rec-running"))
    running.start()
    stopped = host.vms.create(_spec("rec-stopped"))
    stranded = host.vms.create(_spec("rec-stranded", _local_datastore(host, tmp_path / "h0")))
    stranded.start()
    disks_before = {vm.name: [d.path for d in vm.info().disks] for vm in (running, stopped)}
    failed = host.nodes.get(FAILED)

    sim.set_host_state(failed.id, "notResponding", "unknown")  # the stand-in failure
    assert host.nodes.get(FAILED).state == "unknown"
    with recording(host) as calls, pytest.raises(InvalidState, match="fenced=True"):
        host.recover(FAILED)  # vCenter cannot prove a host that stopped answering is down
    assert calls == []

    recovery = host.recover(FAILED, fenced=True)
    by_name = {r.vm_name: r for r in recovery}
    assert set(by_name) == {"rec-running", "rec-stopped", "rec-stranded"}
    for vm, state in ((running, PowerState.RUNNING), (stopped, PowerState.STOPPED)):
        result = by_name[vm.name]
        assert result.outcome is RecoveredFrom.SHARED_STORAGE, result.reason
        assert result.vm is not None
        back = host.vms.get(result.vm.id)
        assert back.id == vm.id  # the same VM (its instance UUID), not a copy
        assert back.state is state
        node = host.nodes.get(back.node or "")
        assert node.name != FAILED and node.info.cluster == failed.info.cluster
        assert [d.path for d in back.info().disks] == disks_before[vm.name]  # its own disks
        assert len([v for v in host.vms.list() if v.name == vm.name]) == 1, "no stale entry left"

    lost = by_name["rec-stranded"]
    assert lost.outcome is RecoveredFrom.NOT_RECOVERED and lost.vm is None
    assert "H0-local" in lost.reason and "no live host sees" in lost.reason
    assert host.vms.get(stranded.id).node == failed.id  # left as it was
    assert recovery.elapsed > 0 and [r.vm_name for r in recovery.failed] == ["rec-stranded"]


def test_a_host_vcenter_reports_powered_off_needs_no_fence_word(sim: Vcsim, host: Host) -> None:
    vm = host.vms.create(_spec("rec-off"))
    vm.start()
    sim.set_host_state(host.nodes.get(FAILED).id, "notResponding", "poweredOff")
    assert host.nodes.get(FAILED).state == "offline"
    (result,) = host.recover(FAILED, to="DC0_C0_H2")
    assert result.outcome is RecoveredFrom.SHARED_STORAGE
    assert result.vm is not None and result.vm.refresh().state is PowerState.RUNNING
    assert host.nodes.get(result.vm.node or "").name == "DC0_C0_H2"


def test_a_connected_host_is_evacuated_not_recovered(host: Host) -> None:
    host.vms.create(_spec("rec-alive"))
    with recording(host) as calls, pytest.raises(InvalidState, match="still answers"):
        host.recover(FAILED, fenced=True)
    assert calls == []
