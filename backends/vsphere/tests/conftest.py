"""Fixtures for the vSphere backend's tests: vcsim in vCenter and ESXi modes.

The simulators come from ``anyvirt_vsphere.testbed.fixtures`` (built from
Debian's govmomi source on first use, then cached). ``vsphere_host`` and the
contract suite's ``anyvirt_host`` are parametrised over both modes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

# The session-scoped simulators. Imported rather than named in ``pytest_plugins``,
# which pytest accepts only in the rootdir's conftest (this suite also runs from there).
import anyvirt_vsphere.testbed.fixtures as _vcsim_fixtures
import pytest
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt
from anyvirt.host import Host
from anyvirt.model import DiskSpec, NicSpec, VMSpec

vcsim_vcenter = _vcsim_fixtures.vcsim_vcenter
vcsim_esx = _vcsim_fixtures.vcsim_esx

#: where the tests place new VMs on the simulated vCenter, and where they move them
VCENTER_HOME_NODE = "DC0_C0_H0"
VCENTER_OTHER_NODE = "DC0_C0_H1"


@pytest.fixture(params=["vcenter", "esx"])
def vcsim(request: pytest.FixtureRequest) -> Vcsim:
    """The simulator of the mode under test."""
    name = "vcsim_vcenter" if request.param == "vcenter" else "vcsim_esx"
    sim: Vcsim = request.getfixturevalue(name)
    return sim


@pytest.fixture
def vsphere_host(vcsim: Vcsim) -> Iterator[Host]:
    with anyvirt.connect(vcsim.anyvirt_uri_with_ca, password=vcsim.password) as host:
        yield host


@pytest.fixture
def vcenter_host(vcsim_vcenter: Vcsim) -> Iterator[Host]:
    with anyvirt.connect(vcsim_vcenter.anyvirt_uri_with_ca, password=vcsim_vcenter.password) as host:
        yield host


@pytest.fixture
def esx_host(vcsim_esx: Vcsim) -> Iterator[Host]:
    with anyvirt.connect(vcsim_esx.anyvirt_uri_with_ca, password=vcsim_esx.password) as host:
        yield host


@pytest.fixture
def home_node() -> str:
    """The vCenter node new test VMs are placed on."""
    return VCENTER_HOME_NODE


@pytest.fixture
def other_node() -> str:
    """A second node of the same cluster, where tests move VMs to."""
    return VCENTER_OTHER_NODE


def small_spec(name: str, node: str | None = None) -> VMSpec:
    return VMSpec(
        name=name,
        cpus=1,
        memory_mib=64,
        disks=[DiskSpec(size_gib=0.0625)],
        nics=[NicSpec()],
        node=node,
    )


@pytest.fixture
def spec_for(vsphere_host: Host) -> Callable[[str], VMSpec]:
    """A small VM spec, placed on a fixed node on vCenter (so moves have a known origin)."""
    return spec_factory(vsphere_host)


def spec_factory(host: Host) -> Callable[[str], VMSpec]:
    node = VCENTER_HOME_NODE if len(host.nodes.list()) > 1 else None
    return lambda name: small_spec(name, node)
