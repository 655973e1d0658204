"""The gate's side of deployment, on memory://: identity applied inside the create and
clone Tasks (all or none), bounded concurrent bulk clones, addresses and readiness."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import anyvirt
from anyvirt import Identity, NicSpec, User, VMSpec
from anyvirt.errors import CapacityExceeded, InvalidSpec, NotSupported, TaskFailed, Timeout
from anyvirt.memory import inject_failure, reset
from anyvirt.model import Capability, Overcommit
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite.spy import recording

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@gate"
IDENT = Identity(users=[User("ops", ssh_keys=[KEY], sudo=True)])


@pytest.fixture
def name() -> Iterator[str]:
    n = unique_name("deploy")
    yield n
    reset(n)


def test_create_applies_the_identity_before_returning(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="web1", nics=[NicSpec()], identity=IDENT))
    seed = host.driver.read_identity(vm.id)
    assert seed is not None and "local-hostname: web1" in seed["meta-data"]
    assert "ops" in seed["user-data"] and KEY.split()[1] in seed["user-data"]


def test_vmspec_identity_is_typed() -> None:
    with pytest.raises(InvalidSpec, match=r"anyvirt\.Identity"):
        VMSpec(name="x", identity={"hostname": "x"})  # type: ignore[arg-type]


def test_a_failed_identity_removes_the_vm(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    inject_failure(name, "apply_identity", TaskFailed("seed upload failed"))
    with pytest.raises(TaskFailed):
        host.vms.create(VMSpec(name="web1", identity=IDENT))
    assert host.vms.list() == []


@pytest.mark.parametrize("concurrency", [None, 4])
def test_a_failed_identity_in_a_bulk_clone_leaves_no_clone(name: str,
                                                            concurrency: int | None) -> None:
    host = anyvirt.connect(f"memory://{name}")
    tmpl = host.vms.create(VMSpec(name="tmpl"))
    driver = host.driver
    original = driver.apply_identity
    seen = {"n": 0}

    def third_fails(*args: object, **kwargs: object) -> None:
        seen["n"] += 1
        if seen["n"] == 3:
            inject_failure(name, "apply_identity", TaskFailed("seed upload failed"))
        original(*args, **kwargs)  # type: ignore[arg-type]

    driver.apply_identity = third_fails  # type: ignore[method-assign]
    with pytest.raises(TaskFailed):
        tmpl.clone("web", count=6, concurrency=concurrency, identity=IDENT)
    assert [v.name for v in host.vms.list()] == ["tmpl"]


def test_bulk_clone_runs_at_most_k_at_once_each_its_own_identity(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?latency=0.05")
    tmpl = host.vms.create(VMSpec(name="tmpl", nics=[NicSpec()]))
    tmpl.mark_template()
    driver = host.driver
    original = driver.clone_vm
    lock, running, peak = threading.Lock(), [0], [0]

    def counted(*args: object, **kwargs: object) -> object:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    driver.clone_vm = counted  # type: ignore[method-assign]
    progress: list[str] = []
    started = time.monotonic()
    clones = tmpl.clone("web", linked=True, count=20, concurrency=8, identity=IDENT,
                        on_progress=lambda task: progress.append(task.message))
    took = time.monotonic() - started
    assert [c.name for c in clones] == [f"web-{i}" for i in range(1, 21)]
    assert 1 < peak[0] <= 8
    assert took < 20 * 0.05 * 2 / 2, f"20 clones at 8 at once took {took:.2f} s"
    seeds = [host.driver.read_identity(c.id) for c in clones]
    hostnames = {s["meta-data"].split("local-hostname: ")[1].split()[0] for s in seeds if s}
    assert hostnames == {f"web-{i}" for i in range(1, 21)}
    assert len({s["meta-data"].split()[1] for s in seeds if s}) == 20, "own instance ids"
    assert any(m.startswith("cloned web-") for m in progress), "progress per clone"


def test_bulk_clone_reserves_all_before_the_first_copy(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?nodes=1&cpus=8&memory_mib=4096",
                           overcommit=Overcommit(cpu=1.0, memory=1.0, counts="defined"))
    tmpl = host.vms.create(VMSpec(name="tmpl", cpus=1, memory_mib=1024))
    tmpl.clone("ok", count=3, concurrency=2, identity=IDENT)  # 4 GiB in all: fits
    with recording(host) as calls, pytest.raises(CapacityExceeded):
        tmpl.clone("web", count=2, concurrency=2, identity=IDENT)
    assert calls == []


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_concurrency_is_checked(name: str, bad: object) -> None:
    host = anyvirt.connect(f"memory://{name}")
    tmpl = host.vms.create(VMSpec(name="tmpl"))
    with recording(host) as calls, pytest.raises(InvalidSpec, match="concurrency"):
        tmpl.clone("web", count=2, concurrency=bad)  # type: ignore[arg-type]
    assert calls == []


def test_user_data_is_its_own_capability(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}?without=identity.user_data")
    with recording(host) as calls, pytest.raises(NotSupported) as info:
        host.vms.create(VMSpec(name="x", identity=Identity(user_data="#cloud-config\n")))
    assert calls == [] and info.value.capability is Capability.IDENTITY_USER_DATA
    host.vms.create(VMSpec(name="y", identity=IDENT))  # without user_data it is fine


def test_addresses_leave_out_link_local_and_wait_ready_names_its_stage(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="web1", nics=[NicSpec(), NicSpec()]))
    with pytest.raises(Timeout, match="not running"):
        vm.wait_ready(timeout=0.3)
    vm.start()
    found = vm.addresses()
    assert len(found) == 2 and {a.mac for a in found} == {n.mac for n in vm.info().nics}
    assert all(a.ip.version == 4 and a.source == "lease" for a in found)
    assert vm.wait_ready(timeout=5) == found


def test_wait_ready_waits_for_an_address_then_the_guest(name: str) -> None:
    host = anyvirt.connect(f"memory://{name}")
    vm = host.vms.create(VMSpec(name="web1", nics=[NicSpec()]))
    vm.start()
    driver = host.driver
    driver.guest_addresses = lambda vm_id: []  # type: ignore[method-assign]
    with pytest.raises(Timeout, match="running, no address yet"):
        vm.wait_ready(timeout=0.3)
    del driver.guest_addresses
    driver.guest_reports_up = lambda vm_id: False  # type: ignore[method-assign]
    with pytest.raises(Timeout, match="address, guest not up"):
        vm.wait_ready(timeout=0.3)
