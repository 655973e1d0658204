"""Opt-in: the whole contract suite on a full VirtualBox (one whose guests can run).

    ANYVIRT_VIRTUALBOX_VBOXMANAGE=/usr/bin/VBoxManage .venv/bin/pytest backends/virtualbox -m virtualbox_full

Each test gets its own VBOX_USER_HOME and machine folder under pytest's temporary
directory, so the host's own VMs are never seen or touched. With the variable
unset this module defines no tests at all (nothing is skipped): the testbed's
real VirtualBox 7.2 and the fake cover the suite then.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import anyvirt

FULL = os.environ.get("ANYVIRT_VIRTUALBOX_VBOXMANAGE")

if FULL:
    from anyvirt_virtualbox.testbed import make_home

    from anyvirt.testing.suite import *  # noqa: F403

    pytestmark = pytest.mark.virtualbox_full

    @pytest.fixture
    def anyvirt_host(tmp_path: Path) -> Iterator[anyvirt.Host]:
        home = make_home(Path(FULL), tmp_path / "vbox")
        with anyvirt.connect(home.uri) as host:
            yield host
