"""``host.vms.watch()`` on Proxmox: a delta poll of ``GET /cluster/resources?type=vm``.

Changes come from anyvirt and from plain HTTP requests to the PVE API (the
platform's own interface, as ``pvesh`` or a script would send them); every request
is checked against the official schema by the ``traffic`` fixture.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pve_support import PASSWORD, InProcessFakePve, Traffic

from anyvirt.host import Host
from anyvirt.model import PowerState, VMSpec
from anyvirt.testing.watch_changes import next_change

INTERVAL = 0.5
#: A poll and the fake's reply: how long the next change may take.
CHANGE_WITHIN = INTERVAL + 2


class Pve:
    """Plain HTTP to the PVE API with a ticket, as any other tool would."""

    def __init__(self, fake: InProcessFakePve) -> None:
        self.base = f"https://127.0.0.1:{fake.pve.port}/api2/json"
        self.http = requests.Session()
        self.ca = str(fake.cafile)  # per request: an environment CA bundle would win over a session's
        ticket = self.http.post(f"{self.base}/access/ticket", verify=self.ca,
                                data={"username": "root@pam", "password": PASSWORD}).json()["data"]
        self.http.cookies.set("PVEAuthCookie", ticket["ticket"])
        self.http.headers["CSRFPreventionToken"] = ticket["CSRFPreventionToken"]

    def __call__(self, method: str, path: str, **data: Any) -> Any:
        reply = self.http.request(method, f"{self.base}{path}", data=data or None, verify=self.ca)
        reply.raise_for_status()
        return reply.json()["data"]


@pytest.fixture
def pve_api(fake: InProcessFakePve) -> Iterator[Pve]:
    api = Pve(fake)
    yield api
    api.http.close()


def test_watch_follows_plain_api_requests_within_one_interval(
    pve_host: Host, pve_api: Pve
) -> None:
    with pve_host.vms.watch(interval=INTERVAL) as watch:
        assert not watch.pushed
        pve_api("POST", "/nodes/pve1/qemu", vmid=4242, name="watched", memory=256, cores=1)
        added, latency = next_change(watch, CHANGE_WITHIN)
        assert (added.kind, added.vm.id, added.vm.name) == ("added", "4242", "watched")
        assert latency < INTERVAL + 1
        pve_api("POST", "/nodes/pve1/qemu/4242/status/start")
        changed, latency = next_change(watch, CHANGE_WITHIN)
        assert (changed.kind, changed.fields, latency < INTERVAL + 1) == ("changed", {"state"}, True)
        assert changed.new is not None and changed.new.state is PowerState.RUNNING
        pve_host.vms.get("4242").stop(force=True)
        changed, latency = next_change(watch, CHANGE_WITHIN)
        assert changed.new is not None and changed.new.state is PowerState.STOPPED
        pve_api("DELETE", "/nodes/pve1/qemu/4242")
        removed, latency = next_change(watch, CHANGE_WITHIN)
        assert (removed.kind, removed.vm.id, latency < INTERVAL + 1) == ("removed", "4242", True)


def test_idle_costs_one_listing_request_per_interval(pve_host: Host, traffic: Traffic) -> None:
    pve_host.vms.create(VMSpec(name="idle", cpus=1, memory_mib=128))
    with pve_host.vms.watch(interval=INTERVAL):
        before = len(traffic.requests)
        time.sleep(4 * INTERVAL + 0.1)
        idle = traffic.requests[before:]
    assert all(method == "GET" and "/cluster/resources" in url and "type=vm" in url
               for method, url in idle), idle
    assert 3 <= len(idle) <= 5


def test_wait_for_polls_at_the_interval_only(pve_host: Host, pve_api: Pve, traffic: Traffic) -> None:
    vm = pve_host.vms.create(VMSpec(name="waited", cpus=1, memory_mib=128))
    before = len(traffic.requests)
    node = pve_host.vms.get(vm.id).node
    threading.Timer(1.0, lambda: pve_api("POST", f"/nodes/{node}/qemu/{vm.id}/status/start")).start()
    vm.wait_for(PowerState.RUNNING, timeout=10, interval=INTERVAL)
    assert vm.state is PowerState.RUNNING
    listings = [u for m, u in traffic.requests[before:] if "/cluster/resources" in u]
    assert 2 <= len(listings) <= 5  # one per interval over about a second, not a busy loop
