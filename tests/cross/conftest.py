"""Fixtures the cross-backend tests share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from anyvirt_vsphere.testbed import Vcsim

import anyvirt
from anyvirt import AnyvirtError, PowerState
from anyvirt.host import Host
from anyvirt.vm import VM


@pytest.fixture(scope="module")
def vc(vcsim_vcenter: Vcsim) -> Iterator[Host]:
    """The vcsim vCenter, connected (its CA trusted)."""
    with anyvirt.connect(vcsim_vcenter.anyvirt_uri_with_ca, password=vcsim_vcenter.password) as host:
        yield host


@pytest.fixture
def made() -> Iterator[Callable[[VM], VM]]:
    """``made(vm)``: removed after the test, whatever state it is in."""
    vms: list[VM] = []
    yield lambda vm: vms.append(vm) or vm  # type: ignore[func-returns-value]
    for vm in reversed(vms):
        with contextlib.suppress(AnyvirtError):
            vm.refresh()
            if vm.state is not PowerState.STOPPED:
                vm.stop(force=True)
            vm.delete(disks=True)
