"""Pytest fixtures that start vcsim testbeds (see :mod:`anyvirt_vsphere.testbed.vcsim`).

Nothing here is active until a project opts in, from its root conftest, with
``pytest_plugins = ["anyvirt_vsphere.testbed.fixtures"]`` (or, below the
rootdir, by importing the fixtures into a conftest). Both fixtures are
session-scoped and start nothing until a test asks for one: a simulator
starts in a fraction of a second, but the first use in a fresh environment
builds the binary (15-30 s), and tests share the inventory. Tests that
change the inventory should create their own VMs rather than destroy the
model's, or start a private :class:`Vcsim`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anyvirt_vsphere.testbed.vcsim import Vcsim

__all__ = ["vcsim_esx", "vcsim_vcenter"]


@pytest.fixture(scope="session")
def vcsim_vcenter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    """A simulated vCenter: DC0 with cluster DC0_C0 (3 hosts, 1 child pool),
    standalone host DC0_H0, datastore LocalDS_0, 4 VMs; TLS with ``ca_file``."""
    with Vcsim(
        datacenters=1,
        clusters=1,
        hosts=3,
        standalone_hosts=1,
        pools=1,
        vms=2,
        workdir=tmp_path_factory.mktemp("vcsim-vcenter"),
    ) as sim:
        yield sim


@pytest.fixture(scope="session")
def vcsim_esx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    """A simulated standalone ESXi host (ha-datacenter, LocalDS_0, 2 VMs); TLS with ``ca_file``."""
    with Vcsim(esx=True, vms=2, workdir=tmp_path_factory.mktemp("vcsim-esx")) as sim:
        yield sim
