"""anyvirt's contract suite on the fake VBoxManage: the running states.

The fake stands in only where a guest must run (start, ACPI stop, pause,
savestate, snapshots of a running VM, revert to one); everything offline is
proven on the real VirtualBox (test_contract_virtualbox_real), and the fake's
formats are held to the real 7.2's in test_fake_fidelity.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from anyvirt_virtualbox.testbed import Home, make_home

import anyvirt
from anyvirt.host import Host
from anyvirt.testing.suite import *  # noqa: F403

#: conftest keeps only the suite's tests that need a running guest (and TestNotSupported)
RUNNING_STATES_ONLY = True


@pytest.fixture
def anyvirt_host(fake_home: Home) -> Iterator[Host]:
    with anyvirt.connect(fake_home.uri) as host:
        yield host


@pytest.fixture
def anyvirt_migration_target(fake_binary: Path, tmp_path: Path) -> Iterator[Host]:
    """A second fake home, for TestNotSupported's migration of a VM with snapshots (refused
    before anything is sent; migrations themselves are proven on the real 7.2)."""
    with anyvirt.connect(make_home(fake_binary, tmp_path / "other-fake").uri) as host:
        yield host
