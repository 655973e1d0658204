"""Recovery of a failed node's VMs (``host.recover``), on every backend that declares it.

Failing a node is the testbed's business: a backend gives ``anyvirt_fail_node``, a
callable ``fail(node, proven=True)`` that makes ``node`` stop answering (``proven``: in a
way the platform can tell it is down, else it only does not answer) and brings it back
after the test. Without one, the tests that need a failed node say so and skip.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anyvirt.errors import InvalidState
from anyvirt.host import Host
from anyvirt.model import Capability, PowerState
from anyvirt.node import Node
from anyvirt.recovery import RecoveredFrom
from anyvirt.rules import takes_vms
from anyvirt.testing.suite.base import ContractTests
from anyvirt.testing.suite.spy import recording
from anyvirt.vm import VM

FailNode = Callable[..., None]


def _fail(request: pytest.FixtureRequest) -> FailNode:
    try:
        fail: FailNode = request.getfixturevalue("anyvirt_fail_node")
    except pytest.FixtureLookupError:
        pytest.skip("this testbed gives no anyvirt_fail_node: it cannot fail a node")
    return fail


def _live_nodes(host: Host, cluster_of: Node | None = None) -> list[Node]:
    nodes = [n for n in host.nodes.list() if takes_vms(n.info)]
    if cluster_of is not None:
        nodes = [n for n in nodes if n.id != cluster_of.id and n.info.cluster == cluster_of.info.cluster]
    return nodes


def _two_nodes(host: Host) -> tuple[Node, Node]:
    """A node to fail, and another live node of its cluster."""
    for node in _live_nodes(host):
        others = _live_nodes(host, cluster_of=node)
        if others:
            return node, others[0]
    pytest.fail("a backend that declares node.recover.restart needs two live nodes of one cluster")


@pytest.mark.anyvirt_requires(Capability.NODE_RECOVERY)
class TestRecovery(ContractTests):
    def test_a_node_that_answers_is_refused(self, anyvirt_host: Host) -> None:
        node = _live_nodes(anyvirt_host)[0]
        with recording(anyvirt_host) as calls, pytest.raises(InvalidState, match="still answers"):
            anyvirt_host.recover(node)
        assert calls == []

    @pytest.mark.anyvirt_requires(Capability.NODE_RECOVERY_RESTART, Capability.VM_CREATE,
                                  Capability.START)
    def test_running_vm_comes_back_running_on_a_live_node(
        self, request: pytest.FixtureRequest, anyvirt_host: Host, make_vm: Callable[..., VM],
    ) -> None:
        fail = _fail(request)
        failed, _ = _two_nodes(anyvirt_host)
        running, stopped = make_vm("rec", node=failed.id), make_vm("rec", node=failed.id)
        running.start()
        fail(failed, proven=True)
        recovery = anyvirt_host.recover(failed)
        by_name = {r.vm_name: r for r in recovery}
        assert {running.name, stopped.name} <= set(by_name)
        for vm, state in ((running, PowerState.RUNNING), (stopped, PowerState.STOPPED)):
            result = by_name[vm.name]
            assert result.outcome is RecoveredFrom.SHARED_STORAGE, result.reason
            assert result.vm is not None and result.old_id == vm.id
            back = anyvirt_host.vms.get(result.vm.id)
            assert back.node not in (failed.id, failed.name)
            assert back.state is state
            request.getfixturevalue("make_vm").track(back)
        assert recovery.elapsed >= max(r.elapsed for r in recovery) >= 0
        assert recovery.failed == []

    @pytest.mark.anyvirt_requires(Capability.NODE_RECOVERY_RESTART, Capability.VM_CREATE)
    def test_unproven_failure_needs_fenced(
        self, request: pytest.FixtureRequest, anyvirt_host: Host, make_vm: Callable[..., VM],
    ) -> None:
        fail = _fail(request)
        failed, target = _two_nodes(anyvirt_host)
        vm = make_vm("rec", node=failed.id)
        fail(failed, proven=False)
        with recording(anyvirt_host) as calls, pytest.raises(InvalidState, match="fenced=True"):
            anyvirt_host.recover(failed)
        assert calls == []
        assert anyvirt_host.vms.get(vm.id).node in (failed.id, failed.name), "nothing moved"
        recovery = anyvirt_host.recover(failed, to=target, fenced=True)
        (result,) = [r for r in recovery if r.vm_name == vm.name]
        assert result.outcome is RecoveredFrom.SHARED_STORAGE, result.reason
        assert result.vm is not None and result.vm.node in (target.id, target.name)
        request.getfixturevalue("make_vm").track(result.vm)

    @pytest.mark.anyvirt_requires(Capability.NODE_RECOVERY_RESTART)
    def test_to_the_failed_node_itself_is_refused(
        self, request: pytest.FixtureRequest, anyvirt_host: Host,
    ) -> None:
        fail = _fail(request)
        failed, _ = _two_nodes(anyvirt_host)
        fail(failed, proven=True)
        with recording(anyvirt_host) as calls, pytest.raises(InvalidState, match="takes no VMs"):
            anyvirt_host.recover(failed, to=failed)
        assert calls == []
