"""The contract suite on memory:// connections that lack capabilities: proves the
NotSupported side of the suite really runs, and that nothing reaches the driver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import anyvirt
from anyvirt.model import Capability, VMSpec
from anyvirt.node import Node
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite import *  # noqa: F403

# everything but listing: a read-only backend
EVERYTHING = ",".join(c.value for c in Capability)
# a backend that can create and run VMs, nothing more
BASIC = ",".join(c.value for c in Capability if c not in {
    Capability.VM_CREATE, Capability.VM_DELETE, Capability.START, Capability.POWER_OFF})


@pytest.fixture(params=["read-only", "basic"])
def anyvirt_host(request: pytest.FixtureRequest) -> Iterator[anyvirt.Host]:
    name = unique_name("limited")
    with anyvirt.connect(f"memory://{name}") as full:
        full.vms.create(VMSpec(name="existing", cpus=1, memory_mib=64))
    without = EVERYTHING if request.param == "read-only" else BASIC
    with anyvirt.connect(f"memory://{name}?without={without}") as host:
        yield host


@pytest.fixture
def anyvirt_migration_target(anyvirt_host: anyvirt.Host) -> Node:
    return anyvirt_host.nodes.list()[-1]


def test_unknown_capability_in_without_is_refused() -> None:
    with pytest.raises(anyvirt.InvalidSpec, match="unknown capability"):
        anyvirt.connect("memory://x?without=teleport")
