"""host.recover on a Proxmox VE cluster: what PVE's own HA does of a failed node's guests.

The node failure is fakepve's own (``set_node_offline``: the node answers 595 and
``/nodes`` lists it offline). PVE's HA manager is a STAND-IN (``HaStandIn``): fakepve does
not model it, so the test says which guests are HA resources and what the HA status says.
Every request is checked against the official PVE API schema (conftest).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakepve import FakePve
from pve_support import HaStandIn, InProcessFakePve, Traffic

from anyvirt.errors import InvalidState, NotSupported
from anyvirt.host import Host
from anyvirt.model import Capability, VMSpec
from anyvirt.recovery import RecoveredFrom
from anyvirt.testing.suite.spy import recording

FAILED = "pve3"


@pytest.fixture
def ha(traffic: Traffic) -> HaStandIn:
    standin = HaStandIn()
    traffic.standins.append(standin)
    return standin


@pytest.fixture
def failed_node(fake: InProcessFakePve, pve: FakePve) -> Iterator[str]:
    yield FAILED
    fake.sync(lambda: pve.set_node_offline(FAILED, offline=False))


def _guest(pve_host: Host, name: str) -> str:
    return pve_host.vms.create(VMSpec(name=name, cpus=1, memory_mib=128, node=FAILED)).id


def test_guests_under_pve_ha_are_reported_as_pve_says(
        fake: InProcessFakePve, pve: FakePve, pve_host: Host, ha: HaStandIn, failed_node: str,
        traffic: Traffic) -> None:
    fenced, restarting = _guest(pve_host, "ha-fenced"), _guest(pve_host, "ha-recovery")
    ha.manage(int(fenced), FAILED, "fence")
    ha.manage(int(restarting), FAILED, "recovery")
    fake.sync(lambda: pve.set_node_offline(FAILED))
    assert pve_host.nodes.get(FAILED).state == "offline"
    sent = len(traffic.requests)
    with recording(pve_host) as calls:
        recovery = pve_host.recover(FAILED)
    assert calls == []
    assert {r.vm_name: r.outcome for r in recovery} == {
        "ha-fenced": RecoveredFrom.CLUSTER, "ha-recovery": RecoveredFrom.CLUSTER}
    reasons = {r.vm_name: r.reason for r in recovery}
    assert "state fence on pve3" in reasons["ha-fenced"]
    assert "state recovery on pve3" in reasons["ha-recovery"]
    assert all(method == "GET" for method, _ in traffic.requests[sent:]), "a report changes nothing"


def test_a_guest_outside_ha_is_not_supported_before_anything_is_sent(
        fake: InProcessFakePve, pve: FakePve, pve_host: Host, ha: HaStandIn, failed_node: str,
        traffic: Traffic) -> None:
    managed = _guest(pve_host, "ha-managed")
    _guest(pve_host, "unmanaged")
    ha.manage(int(managed), FAILED, "fence")
    fake.sync(lambda: pve.set_node_offline(FAILED))
    sent = len(traffic.requests)
    with pytest.raises(NotSupported, match="unmanaged") as info:
        pve_host.recover(FAILED)
    assert info.value.capability is Capability.NODE_RECOVERY_RESTART
    assert "ha-manager add" in str(info.value)
    assert all(method == "GET" for method, _ in traffic.requests[sent:])


def test_pve_picks_the_node_itself(pve_host: Host, failed_node: str) -> None:
    with recording(pve_host) as calls, pytest.raises(NotSupported) as info:
        pve_host.recover(FAILED, to="pve1")
    assert info.value.capability is Capability.NODE_RECOVERY_RESTART
    assert calls == []


def test_a_node_that_answers_is_refused(pve_host: Host) -> None:
    with pytest.raises(InvalidState, match="still answers"):
        pve_host.recover(FAILED)
