"""anyvirt's contract suite on the real VirtualBox 7.2 (Debian sid chroot).

No guest can run on this testbed (no vboxdrv kernel module), so the driver
declares no running-state capability here: those tests are skipped by
capability and TestNotSupported proves each raises NotSupported before any
command is sent. The running states run on the fake (test_contract_virtualbox_fake).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anyvirt_virtualbox.testbed import Home

import anyvirt
from anyvirt.host import Host
from anyvirt.testing.suite import *  # noqa: F403


@pytest.fixture
def anyvirt_host(real_home: Home) -> Iterator[Host]:
    with anyvirt.connect(real_home.uri) as host:
        yield host


@pytest.fixture
def anyvirt_migration_target(other_real_host: Host) -> Host:
    """Another VirtualBox home: a cold migration goes there as an OVA."""
    return other_real_host


@pytest.fixture
def anyvirt_unreachable_host(real_home: Home) -> Iterator[Host]:
    """This same home spelled another way: one registry seen twice, which no move can go to."""
    with anyvirt.connect(f"{real_home.uri}/.") as host:
        yield host
