"""``host.vms.watch()`` on the real VBoxManage 7.2: a poll of at most one process.

Changes come from anyvirt and from ``VBoxManage`` itself, run by the test.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from anyvirt_virtualbox import watching
from anyvirt_virtualbox.runner import VBoxManage
from anyvirt_virtualbox.testbed import Home

from anyvirt.host import Host
from anyvirt.model import VMSpec
from anyvirt.testing.watch_changes import next_change

INTERVAL = 0.5
#: A poll and VBoxManage's reply: how long the next change may take.
CHANGE_WITHIN = INTERVAL + 5


def count_processes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every VBoxManage process anyvirt starts from now on."""
    started: list[list[str]] = []
    real = VBoxManage.run

    def counted(self: VBoxManage, args: list[str], *rest: Any, **kw: Any) -> Any:
        started.append(list(args))
        return real(self, args, *rest, **kw)

    monkeypatch.setattr(VBoxManage, "run", counted)
    return started


def test_the_cheap_poll_lists_what_the_full_listing_does(
    real_host: Host, real_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_host.vms.create(VMSpec(name="a", cpus=1, memory_mib=64))
    real_host.vms.create(VMSpec(name="b", cpus=2, memory_mib=128))
    driver: Any = real_host.driver
    started = count_processes(monkeypatch)
    polled = watching.poll(driver.vbox, driver.home, driver.node, can_run=driver.kernel_driver)
    processes = len(started)
    assert sorted(polled, key=lambda s: s.id) == sorted(real_host.driver.list_vms(), key=lambda s: s.id)
    assert processes <= 1  # `list runningvms` at most; none without a kernel driver


def test_watch_follows_vboxmanage_and_anyvirt_within_one_interval(
    real_host: Host, real_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = count_processes(monkeypatch)
    with real_host.vms.watch(interval=INTERVAL) as watch:
        vm = real_host.vms.create(VMSpec(name="watched", cpus=1, memory_mib=64))
        added, _ = next_change(watch, CHANGE_WITHIN)
        assert (added.kind, added.vm.id) == ("added", vm.id)
        real_home.run("modifyvm", vm.id, "--cpus", "2", "--memory", "96")
        changed, latency = next_change(watch, CHANGE_WITHIN)
        assert (changed.kind, changed.fields) == ("changed", {"cpus", "memory_mib"})
        assert latency < INTERVAL + 2  # VBoxManage itself is slow on a loaded machine
        polls_before = len(started)
        time.sleep(4 * INTERVAL)
        idle = started[polls_before:]
        assert len(idle) <= 5 and all(args[:2] == ["list", "runningvms"] for args in idle), idle
        real_home.run("unregistervm", vm.id, "--delete")
        removed, latency = next_change(watch, CHANGE_WITHIN)
        assert (removed.kind, removed.vm.id, latency < INTERVAL + 2) == ("removed", vm.id, True)
