"""VMs on fakepve: listing, names, create and its failures, tasks, lifecycle, reconfigure, delete."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from anyvirt_proxmox import ProxmoxExtensions
from anyvirt_proxmox import tasks as pve_tasks
from fakepve import FakePve
from pve_support import PASSWORD, InProcessFakePve, Send, StandIn, Traffic

import anyvirt
from anyvirt import DiskSpec, NicSpec, PowerState, VMSpec
from anyvirt.errors import Cancelled, InvalidSpec, InvalidState, NotFound, NotSupported, TaskFailed, Timeout
from anyvirt.host import Host
from anyvirt.vm import VM


@pytest.fixture
def make(pve_host: Host) -> Iterator[Callable[..., VM]]:
    made: list[VM] = []

    def create(name: str, **changes: object) -> VM:
        spec = VMSpec(name=name, cpus=1, memory_mib=64, disks=[DiskSpec(size_gib=0.0625)], nics=[NicSpec()],
                      node="pve1")
        vm = pve_host.vms.create(spec if not changes else anyvirt.model.evolve(spec, **changes))
        made.append(vm)
        return vm

    yield create
    for vm in made:
        try:
            vm.refresh()
            if vm.state is not PowerState.STOPPED:
                vm.stop(force=True)
            vm.delete()
        except (NotFound, anyvirt.AnyvirtError):
            continue


def _posts(traffic: Traffic, suffix: str) -> int:
    return sum(1 for p in traffic.paths("POST") if p.endswith(suffix))


# ---------------------------------------------------------------- listing
def test_listing_is_one_request_and_leaves_containers_out(pve_host: Host, pve: FakePve,
                                                          fake: InProcessFakePve, traffic: Traffic) -> None:
    fake.sync(lambda: pve.add_ct(4242, "ct1", node="pve2", status="running"))
    try:
        before = len(traffic.requests)
        vms = pve_host.vms.list()
        assert len(traffic.requests) == before + 1
        assert "4242" not in {vm.id for vm in vms}
        assert [c.id for c in pve_host.extension(ProxmoxExtensions).list_containers()] == ["4242"]
        with pytest.raises(NotFound, match="container"):
            pve_host.vms.get("4242")
    finally:
        fake.sync(lambda: pve.cts.clear())


def test_vmids_and_names(pve_host: Host, make: Callable[..., VM], traffic: Traffic) -> None:
    vm = make("idname")
    assert vm.id.isdigit() and int(vm.id) >= 100
    assert pve_host.vms.get(vm.id).name == "idname"
    assert pve_host.vms.get("idname").id == vm.id
    for bad in ("0", "-3", "99", "1000000000"):
        with pytest.raises(InvalidSpec):
            pve_host.vms.get(bad)
    with pytest.raises(InvalidSpec):
        pve_host.driver.vm_summary("web1")
    posts = len(traffic.paths("POST"))
    for name in ("web 1", "web_1", "-web", "web.", "ünïcode"):
        with pytest.raises(InvalidSpec, match="DNS"):
            pve_host.vms.create(VMSpec(name=name, memory_mib=64))
    assert len(traffic.paths("POST")) == posts, "a name PVE would refuse is refused before any request"


def test_hostile_description_arrives_intact(make: Callable[..., VM], traffic: Traffic) -> None:
    text = "a&name=evil,net1=virtio,bridge=x;\"'<b>%2F..%00/?#\nline two"
    vm = make("hostile", description=text)
    assert vm.info().description == text
    create = [url for m, url in traffic.requests if m == "POST" and url.endswith("/qemu")]
    assert create and "evil" not in create[-1], "the description went in the body, not the URL"


def test_info_reports_config(make: Callable[..., VM]) -> None:
    vm = make("efi", firmware="efi", cpus=2, memory_mib=128,
              nics=[NicSpec(model="e1000", mac="bc:24:11:00:00:42")])
    info = vm.info()
    assert info.firmware is anyvirt.Firmware.EFI
    assert info.extra["config"]["bios"] == "ovmf" and "efidisk0" in info.extra["config"]
    assert [(n.model, n.mac, n.network) for n in info.nics] == [("e1000", "bc:24:11:00:00:42", "vmbr0")]
    assert [(d.bus, d.size_bytes, d.storage) for d in info.disks] == [("scsi", 64 * 1024 * 1024, "local-lvm")]
    assert info.extra["uuid"] and (info.cpus, info.memory_mib) == (2, 128)


def test_unknown_bridge_or_storage_is_refused_before_the_create(pve_host: Host, traffic: Traffic) -> None:
    with pytest.raises(InvalidSpec, match="bridge"):
        pve_host.vms.create(VMSpec(name="nobr", memory_mib=64, nics=[NicSpec(network="vmbr9")]))
    with pytest.raises(InvalidSpec, match="storage"):
        pve_host.vms.create(VMSpec(name="nost", memory_mib=64, disks=[DiskSpec(size_gib=1, storage="nope")]))
    with pytest.raises(InvalidSpec, match="nvme"):
        pve_host.vms.create(VMSpec(name="nvme", memory_mib=64, disks=[DiskSpec(size_gib=1, bus="nvme")]))
    assert _posts(traffic, "/qemu") == 0


# ---------------------------------------------------------------- create: ids and failures
class NextIdCollisionStandIn(StandIn):
    """Stand-in for a second client that wins the race for a vmid: it answers ``/cluster/nextid``
    as fakepve does, then takes that id itself (fakepve has one client at a time, so ids
    never collide on it)."""

    def __init__(self, fake: InProcessFakePve, times: int = 1) -> None:
        self.fake = fake
        self.times = times
        self.taken: list[int] = []

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        if self.times <= 0 or not str(request.url).endswith("/cluster/nextid"):
            return None
        answer = send(request)
        vmid = int(answer.json()["data"])
        self.fake.sync(lambda: self.fake.pve.add_vm(vmid, f"intruder{vmid}", node="pve2"))
        self.taken.append(vmid)
        self.times -= 1
        return answer


def test_a_vmid_taken_meanwhile_is_retried(pve_host: Host, fake: InProcessFakePve, traffic: Traffic,
                                           make: Callable[..., VM]) -> None:
    standin = NextIdCollisionStandIn(fake, times=2)
    traffic.standins.append(standin)
    try:
        vm = make("collide")
        assert len(standin.taken) == 2 and int(vm.id) not in standin.taken
        assert _posts(traffic, "/qemu") == 3
        assert pve_host.vms.get(vm.id).name == "collide"
    finally:
        for vmid in standin.taken:
            fake.sync(lambda vmid=vmid: fake.pve.vms.remove(fake.pve.vm(vmid)))


def test_a_failed_create_task_is_task_failed(pve_host: Host, pve: FakePve) -> None:
    before_vms = {vm.vmid for vm in pve.vms}
    pve.fail("POST", "/nodes/{node}/qemu", error="unable_parse_drive_interface", times=1)
    with pytest.raises(TaskFailed) as info:
        pve_host.vms.create(VMSpec(name="broken", memory_mib=64, disks=[DiskSpec(size_gib=1)], node="pve1"))
    assert info.value.task_id.startswith("UPID:pve1:")
    assert "TASK ERROR: unable to parse drive interface" in info.value.log
    assert {vm.vmid for vm in pve.vms} == before_vms
    assert not pve_host.vms.exists("broken")


def test_a_create_that_times_out_leaves_no_vm_and_no_disk(pve_host: Host, pve: FakePve,
                                                           fake: InProcessFakePve) -> None:
    fake.sync(lambda: pve.add_ceph_storage("ceph-pool"))
    fake.sync(lambda: pve.ceph_slow(20))  # every RBD operation 20 PVE seconds longer
    pve.time_scale = 0.05  # 1 s of real time
    try:
        with pytest.raises(anyvirt.Timeout):
            pve_host.vms.create(VMSpec(name="halfmade", memory_mib=64, node="pve1",
                                       disks=[DiskSpec(size_gib=1, storage="ceph-pool")]), timeout=0.3)
        # the caller hears Timeout at the deadline; the removal follows when PVE's task ends
        deadline = time.monotonic() + 15
        while [vm for vm in pve.vms if vm.name == "halfmade"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [vm for vm in pve.vms if vm.name == "halfmade"], "the half-made VM was removed"
        assert not pve.storages["ceph-pool"].get("volumes"), "and its disk"
        assert not pve_host.vms.exists("halfmade")
    finally:
        pve.time_scale = 0
        fake.sync(lambda: pve.ceph_recover())
        fake.sync(lambda: pve.storages.pop("ceph-pool"))


@contextlib.contextmanager
def _slow_ceph(pve: FakePve, fake: InProcessFakePve) -> Iterator[None]:
    """A create on ceph-pool takes 20 PVE seconds more: 1 s of real time."""
    fake.sync(lambda: pve.add_ceph_storage("ceph-pool"))
    fake.sync(lambda: pve.ceph_slow(20))
    pve.time_scale = 0.05
    try:
        yield
    finally:
        pve.time_scale = 0
        pve.failures.clear()
        fake.sync(lambda: pve.ceph_recover())
        for vm in [vm for vm in pve.vms if vm.name.startswith("closed-early")]:
            fake.sync(lambda vm=vm: pve.vms.remove(vm))
        fake.sync(lambda: pve.storages.pop("ceph-pool"))


def test_closing_the_host_right_after_a_create_timed_out_still_removes_what_it_made(
        pve: FakePve, fake: InProcessFakePve, migration_standin: StandIn,
        caplog: pytest.LogCaptureFixture) -> None:
    """The Timeout promises removal; the end of the caller's ``with`` block closed the session
    under the cleanup, which then failed without a word and left the VM on PVE."""
    caplog.set_level(logging.INFO, logger="anyvirt")
    spec = VMSpec(name="closed-early", memory_mib=64, node="pve1",
                  disks=[DiskSpec(size_gib=1, storage="ceph-pool")])
    with _slow_ceph(pve, fake):
        with anyvirt.connect(fake.uri, password=PASSWORD) as host, \
                pytest.raises(Timeout, match="will be removed"):
            host.vms.create(spec, timeout=0.3)
        # close() returned: the half-made VM and its disk are gone already
        assert not [vm for vm in pve.vms if vm.name == "closed-early"]
        assert not pve.storages["ceph-pool"].get("volumes")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        assert "waiting up to" in caplog.text  # close() said what it waited for


def test_a_cleanup_that_fails_after_a_timeout_says_so_out_loud(
        pve: FakePve, fake: InProcessFakePve, migration_standin: StandIn,
        caplog: pytest.LogCaptureFixture) -> None:
    """Nobody waits for the worker's error after a Timeout: a failed removal must be logged."""
    spec = VMSpec(name="closed-early-2", memory_mib=64, node="pve1",
                  disks=[DiskSpec(size_gib=1, storage="ceph-pool")])
    with _slow_ceph(pve, fake):
        pve.fail("DELETE", "/nodes/{node}/qemu/{vmid}", 500, "storage is locked")
        with anyvirt.connect(fake.uri, password=PASSWORD) as host, \
                pytest.raises(Timeout, match="will be removed"):
            host.vms.create(spec, timeout=0.3)
        left = [vm for vm in pve.vms if vm.name == "closed-early-2"]
        assert left, "the injected failure kept the VM"
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(f"VM {left[0].vmid}" in m and "remove it by hand" in m for m in errors), errors


# ---------------------------------------------------------------- tasks
class WarningsStandIn(StandIn):
    """Stand-in for a task ending in ``WARNINGS: 1`` (fakepve's tasks end OK or in an error):
    fakepve's answer for the task's status and log, with the ending PVE writes after a warning."""

    def __init__(self, task_type: str) -> None:
        self.task_type = task_type

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        url = str(request.url)
        if f":{self.task_type}:" not in requests.utils.unquote(url) or "/tasks/" not in url:
            return None
        answer = send(request)
        body = answer.json()
        if url.split("?")[0].endswith("/status") and body["data"].get("exitstatus") == "OK":
            body["data"]["exitstatus"] = "WARNINGS: 1"
        elif "/log" in url:
            body["data"][-1:] = [{"n": 1, "t": "WARN: guest agent is not running"},
                                 {"n": 2, "t": "TASK WARNINGS: 1"}]
        answer._content = json.dumps(body).encode()
        return answer


def test_warnings_end_a_task_well(make: Callable[..., VM], traffic: Traffic,
                                  caplog: pytest.LogCaptureFixture) -> None:
    vm = make("warned")
    traffic.standins.append(WarningsStandIn("qmstart"))
    messages: list[str] = []
    with caplog.at_level(logging.WARNING, logger="anyvirt.proxmox"):
        vm.start(on_progress=lambda t: messages.append(t.message))
    assert vm.state is PowerState.RUNNING
    assert any("WARN: guest agent is not running" in r.getMessage() for r in caplog.records)
    assert any("warnings: 1" in m for m in messages)


def test_a_failed_task_carries_its_log(make: Callable[..., VM], pve: FakePve, fake: InProcessFakePve) -> None:
    vm = make("nostart")
    fake.sync(lambda: setattr(pve.vm(int(vm.id)), "start_error", "disk local-lvm:vm-x missing"))
    with pytest.raises(TaskFailed) as info:
        vm.start()
    assert "disk local-lvm:vm-x missing" in str(info.value)
    assert "TASK ERROR: disk local-lvm:vm-x missing" in info.value.log
    assert info.value.task_id.startswith("UPID:pve1:") and ":qmstart:" in info.value.task_id
    assert vm.refresh().state is PowerState.STOPPED


def test_cancel_stops_the_pve_task(make: Callable[..., VM], pve: FakePve, fake: InProcessFakePve,
                                   traffic: Traffic, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = make("cancelme")
    vm.start()
    monkeypatch.setattr(pve_tasks, "CANCEL_GRACE", 0.3)
    fake.sync(lambda: setattr(pve.vm(int(vm.id)), "shutdown_secs", 30))
    pve.time_scale = 0.1  # the guest takes 3 s to shut down
    task = vm.stop(wait=False, timeout=30)
    while not task.native_id:
        pass
    task.cancel()
    with pytest.raises(Cancelled):
        task.wait(20)
    deletes = traffic.paths("DELETE")
    assert any("/tasks/UPID:pve1:" in p and ":qmshutdown:" in p for p in deletes)


# ---------------------------------------------------------------- lifecycle
def test_lifecycle_verbs_are_pve_actions(make: Callable[..., VM], traffic: Traffic) -> None:
    vm = make("verbs")
    vm.start()
    vm.pause()
    assert vm.state is PowerState.PAUSED and "paused" in vm.raw_state
    vm.resume()
    vm.suspend()
    assert vm.state is PowerState.SUSPENDED and "lock=suspended" in vm.raw_state
    vm.start()
    vm.reboot()
    vm.reset()
    vm.stop(timeout=30)
    assert vm.state is PowerState.STOPPED
    actions = [p.rsplit("/", 1)[-1] for p in traffic.paths("POST") if "/status/" in p]
    assert actions == ["start", "suspend", "resume", "suspend", "start", "reboot", "reset", "shutdown"]
    suspends = [form_of(traffic, i) for i in _status_posts(traffic, "suspend")]
    assert [s.get("todisk") for s in suspends] == [None, "1"]


def _status_posts(traffic: Traffic, verb: str) -> list[int]:
    return [i for i, (m, url) in enumerate(traffic.requests)
            if m == "POST" and url.endswith(f"/status/{verb}")]


def form_of(traffic: Traffic, index: int) -> dict[str, str]:
    return traffic.bodies[index]


def test_a_guest_ignoring_acpi_times_out(make: Callable[..., VM], pve: FakePve,
                                         fake: InProcessFakePve) -> None:
    vm = make("noacpi")
    vm.start()
    fake.sync(lambda: setattr(pve.vm(int(vm.id)), "acpi", False))
    pve.time_scale = 0.01
    with pytest.raises(Timeout, match="force=True"):
        vm.stop(timeout=5)
    assert vm.refresh().state is PowerState.RUNNING
    vm.stop(force=True)


def test_ha_managed_vms(pve_host: Host, pve: FakePve, fake: InProcessFakePve) -> None:
    fake.sync(lambda: pve.add_vm(4300, "havm", node="pve3", status="stopped", config={"memory": 64}))
    fake.sync(lambda: setattr(pve.vm(4300), "ha_state", "stopped"))
    try:
        vm = pve_host.vms.get("havm")
        assert "ha=stopped" in vm.raw_state
        pve.time_scale, pve.ha_delay = 0.01, 30  # the HA manager acts 0.3 s after the request
        vm.start()
        assert vm.state is PowerState.RUNNING, "start waits for the HA manager, not just the task"
        assert "ha=started" in pve_host.vms.get("havm").raw_state
        vm.stop(force=True)
        assert vm.state is PowerState.STOPPED
    finally:
        pve.time_scale = 0
        fake.sync(lambda: pve.vms.remove(pve.vm(4300)))


# ---------------------------------------------------------------- reconfigure, delete
class ConcurrentChangeStandIn(StandIn):
    """Stand-in for another client changing the VM between our read and our write (fakepve has
    one client): before our ``PUT .../config`` reaches fakepve, the VM's config changes there."""

    def __init__(self, fake: InProcessFakePve, vmid: int) -> None:
        self.fake, self.vmid = fake, vmid

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        if request.method == "PUT" and str(request.url).endswith(f"/qemu/{self.vmid}/config"):
            config = self.fake.pve.vm(self.vmid).config
            self.fake.sync(lambda: config.update(description="changed by another"))
        return None


def test_reconfigure_uses_the_digest(make: Callable[..., VM], fake: InProcessFakePve,
                                     traffic: Traffic) -> None:
    vm = make("digest")
    traffic.standins.append(ConcurrentChangeStandIn(fake, int(vm.id)))
    with pytest.raises(InvalidState, match="changed by someone else"):
        vm.reconfigure(cpus=2)
    assert vm.refresh().cpus == 1, "the other client's change was not overwritten"
    put = [i for i, (m, _) in enumerate(traffic.requests) if m == "PUT"]
    assert traffic.bodies[put[-1]].get("digest")


def test_reconfigure_of_a_running_vm_reports_pending(make: Callable[..., VM]) -> None:
    vm = make("pending")
    vm.start()
    assert vm.reconfigure(cpus=2, memory_mib=96) is False
    pending = vm.info().extra["pending"]
    assert pending == {"cores": "2", "memory": "96"}, "PVE applies them at the next start"
    vm.stop(force=True)
    vm.start()
    assert (vm.info().cpus, vm.info().memory_mib) == (2, 96)


def test_delete_purges_and_refuses_keeping_disks(make: Callable[..., VM], traffic: Traffic) -> None:
    vm = make("gone")
    with pytest.raises(NotSupported, match="disks"):
        vm.delete(disks=False)
    assert not traffic.paths("DELETE")
    vm.delete()
    index = next(i for i, (m, _) in enumerate(traffic.requests) if m == "DELETE")
    assert traffic.bodies[index] == {"purge": "1", "destroy-unreferenced-disks": "1"}
    with pytest.raises(NotFound):
        vm.refresh()
