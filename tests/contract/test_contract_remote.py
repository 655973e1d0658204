"""Opt-in: the contract suite against real platforms, when the environment names them.

    ANYVIRT_REAL_URIS="vsphere://admin@vc.lab proxmox://root%40pam@pve1:8006" \\
    ANYVIRT_REAL_PASSWORD=... .venv/bin/pytest tests/contract/test_contract_remote.py -m real_remote

Each URI may carry its own password variable: ``ANYVIRT_REAL_PASSWORD_<N>`` for the
N-th URI (from 1), else ``ANYVIRT_REAL_PASSWORD``, else the usual ``ANYVIRT_*``
variables and profiles. ``ANYVIRT_REAL_MIGRATION_NODE`` names a node to migrate to.
With nothing set, this module defines no tests at all (nothing is skipped).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import anyvirt

REAL_URIS = os.environ.get("ANYVIRT_REAL_URIS", "").split()

if REAL_URIS:
    from anyvirt.testing.suite import *  # noqa: F403

    pytestmark = pytest.mark.real_remote

    def _password(index: int) -> str | None:
        return os.environ.get(f"ANYVIRT_REAL_PASSWORD_{index + 1}") or os.environ.get(
            "ANYVIRT_REAL_PASSWORD")

    @pytest.fixture(params=range(len(REAL_URIS)), ids=lambda i: REAL_URIS[i].split("://")[0])
    def anyvirt_host(request: pytest.FixtureRequest) -> Iterator[anyvirt.Host]:
        index: int = request.param
        with anyvirt.connect(REAL_URIS[index], password=_password(index)) as host:
            yield host

    @pytest.fixture
    def anyvirt_migration_target(anyvirt_host: anyvirt.Host) -> anyvirt.Node:
        wanted = os.environ.get("ANYVIRT_REAL_MIGRATION_NODE")
        if wanted:
            return anyvirt_host.nodes.get(wanted)
        nodes = anyvirt_host.nodes.list()
        if len(nodes) < 2:
            pytest.fail("set ANYVIRT_REAL_MIGRATION_NODE: the platform declares migration")
        return nodes[-1]
