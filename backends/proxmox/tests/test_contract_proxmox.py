"""anyvirt's contract suite against fakepve (three nodes), every request held to the PVE schema,
the portable parity scenario included.

Migration runs through ``MigrationStandIn`` (fakepve does not move VMs); see conftest. Linked
clones and templates are not declared (PVE's are template-only and one-way): their
NotSupported tests run, and ``test_pve_clones_migration.py`` covers templates and linked clones.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anyvirt.host import Host
from anyvirt.model import DiskSpec, NicSpec, VMSpec
from anyvirt.node import Node
from anyvirt.testing.suite import *  # noqa: F403

HOME, OTHER = "pve1", "pve2"


@pytest.fixture
def anyvirt_host(pve_host: Host) -> Host:
    return pve_host


@pytest.fixture
def anyvirt_vm_spec() -> Callable[[str], VMSpec]:
    def spec(name: str) -> VMSpec:
        return VMSpec(name=name, cpus=1, memory_mib=64, disks=[DiskSpec(size_gib=0.0625)],
                      nics=[NicSpec()], node=HOME)
    return spec


@pytest.fixture
def anyvirt_migration_target(anyvirt_host: Host) -> Node:
    return anyvirt_host.nodes.get(OTHER)
