"""Fixtures the cross-backend tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anyvirt_vsphere.testbed import Vcsim

import anyvirt
from anyvirt.host import Host


@pytest.fixture(scope="module")
def vc(vcsim_vcenter: Vcsim) -> Iterator[Host]:
    """The vcsim vCenter, connected (its CA trusted)."""
    with anyvirt.connect(vcsim_vcenter.anyvirt_uri_with_ca, password=vcsim_vcenter.password) as host:
        yield host
