"""The contract suite on memory://, the reference backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import anyvirt
from anyvirt.memory import reset
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
