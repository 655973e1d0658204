"""pytest fixtures for the Proxmox testbed: opt in with
``pytest_plugins = ["anyvirt_proxmox.testbed.fixtures"]`` (or import them in a conftest).

* ``proxmox_testbed``: fakepve in its own process for the session (3 nodes, 6 guests);
* ``proxmox_host``: a connected ``Host`` on it, closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import anyvirt
from anyvirt.host import Host
from anyvirt_proxmox.testbed.fakepve import FakePveTestbed


@pytest.fixture(scope="session")
def proxmox_testbed() -> Iterator[FakePveTestbed]:
    """fakepve serving a three-node cluster with six guests, verified TLS, for the session."""
    with FakePveTestbed(nodes=3, guests=6) as bed:
        yield bed


@pytest.fixture
def proxmox_host(proxmox_testbed: FakePveTestbed) -> Iterator[Host]:
    """A connection to ``proxmox_testbed``."""
    with anyvirt.connect(proxmox_testbed.uri, password=proxmox_testbed.password) as host:
        yield host
