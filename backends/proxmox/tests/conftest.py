"""Fixtures for the Proxmox backend's tests: fakepve, the schema check, and stand-ins.

Every HTTP request any test sends (through ``requests``, which proxmoxer uses)
is checked against the official PVE schema (``pve_schema_support``); a test whose
requests leave the schema fails. Two fakepve's serve the tests:

* ``pve`` / ``pve_host``: fakepve in this process (3 nodes, time_scale 0),
  so tests can reach into its state and fault scenarios;
* ``proxmox_testbed`` / ``proxmox_host``: the ``anyvirt testbed proxmox`` testbed,
  fakepve in its own process, verified TLS.

Where fakepve lacks a feature, a **stand-in** of this project answers that one
request (``StandIn`` subclasses, named as such), still schema-checked:
fakepve's ``POST .../migrate`` does not move the VM and its ``GET .../migrate``
precheck answers a made-up sample, so ``MigrationStandIn`` answers both from
fakepve's state and moves the VM with fakepve's own migration scenario;
fakepve cannot parse a linked clone's volume name back, so
``LinkedVolumeStandIn`` answers where PVE says such a volume lives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyvirt_proxmox.testbed.fixtures as _fixtures
import pve_support
import pytest
import requests
import requests.adapters
from anyvirt_proxmox.testbed import make_certificate
from fakepve import FakePve
from pve_support import (
    NODES,
    PASSWORD,
    InProcessFakePve,
    LinkedVolumeStandIn,
    MigrationStandIn,
    Traffic,
)

import anyvirt
from anyvirt.host import Host


@pytest.fixture(autouse=True)
def traffic(monkeypatch: pytest.MonkeyPatch) -> Iterator[Traffic]:
    """The schema check of every request the test sends: violations fail the test."""
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", pve_support.checked_send)
    pve_support.current = Traffic()
    seen = pve_support.current
    try:
        yield seen
    finally:
        pve_support.current = None
    if seen.violations:
        shown = "\n  ".join(dict.fromkeys(seen.violations))
        pytest.fail(f"requests outside the official PVE API schema:\n  {shown}", pytrace=False)


# ---------------------------------------------------------------- servers and hosts
@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("pve-tls"))


@pytest.fixture(scope="session")
def fake(certificate: tuple[Path, Path]) -> Iterator[InProcessFakePve]:
    served = InProcessFakePve(*certificate)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def pve(fake: InProcessFakePve) -> Iterator[FakePve]:
    """The in-process fake, its fault scenarios reset after the test."""
    yield fake.pve
    fake.pve.time_scale = 0
    fake.pve.failures.clear()
    for node in NODES:
        fake.pve.set_node_offline(node, False)


@pytest.fixture
def linked_volume_standin(fake: InProcessFakePve, traffic: Traffic) -> LinkedVolumeStandIn:
    standin = LinkedVolumeStandIn(fake)
    traffic.standins.append(standin)
    return standin


@pytest.fixture
def migration_standin(fake: InProcessFakePve, traffic: Traffic) -> MigrationStandIn:
    standin = MigrationStandIn(fake)
    traffic.standins.append(standin)
    return standin


@pytest.fixture
def pve_host(fake: InProcessFakePve, migration_standin: MigrationStandIn) -> Iterator[Host]:
    with anyvirt.connect(fake.uri, password=PASSWORD) as host:
        yield host


# the testbed's own fixtures (fakepve in its own process), as users opt into them
proxmox_testbed = _fixtures.proxmox_testbed
proxmox_host = _fixtures.proxmox_host
