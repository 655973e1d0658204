"""The contract suite on memory://, the reference backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import anyvirt
from anyvirt.memory import fail_node, reset, revive_node
from anyvirt.node import Node
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite import *  # noqa: F403


@pytest.fixture
def anyvirt_host() -> Iterator[anyvirt.Host]:
    with anyvirt.connect(f"memory://{unique_name('contract')}") as host:
        yield host


@pytest.fixture
def anyvirt_migration_target(anyvirt_host: anyvirt.Host) -> Node:
    return anyvirt_host.nodes.list()[-1]


@pytest.fixture
def anyvirt_other_host() -> Iterator[anyvirt.Host]:
    """Another memory host, for the move refusals' linked clones (the target above is a node)."""
    name = unique_name("contract-other")
    with anyvirt.connect(f"memory://{name}") as host:
        yield host
    reset(name)


@pytest.fixture
def anyvirt_fail_node(anyvirt_host: anyvirt.Host) -> Iterator[Callable[..., None]]:
    """The memory backend's simulated node failure; the nodes answer again afterwards."""
    name = anyvirt_host.uri.removeprefix("memory://")
    failed: list[str] = []

    def fail(node: Node, *, proven: bool = True) -> None:
        fail_node(name, node.id, proven=proven)
        failed.append(node.id)

    yield fail
    for node_id in failed:
        revive_node(name, node_id)
