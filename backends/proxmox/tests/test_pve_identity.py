"""Deployment primitives on fakepve: PVE's cloud-init keys, guest-agent addresses, and clones
that wait out PVE's locks.

The primitives are called through ``host.driver`` (the SPI) until the gate wires them into
VMSpec/clone and the handles. Every request is checked against the official PVE schema (the
``traffic`` fixture). fakepve (in process) keeps the keys a config POST sets, so the config
is read back through the API; its guest agent answers only for a running VM whose ``agent``
state the test sets (fakepve's own model, no stand-in), and its error catalogue holds PVE's
real lock timeout text (``config_lock_timeout``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from anyvirt_proxmox.clone import is_lock_timeout
from anyvirt_proxmox.driver import ProxmoxDriver
from anyvirt_proxmox.guest import reported_addresses
from fakepve import FakePve
from pve_support import InProcessFakePve, Traffic

from anyvirt import Capability, DiskSpec, NicSpec, PowerState, VMSpec
from anyvirt.addresses import ReportedAddress, select_addresses
from anyvirt.deployment import Dhcp, Identity, Static, User, compile_proxmox
from anyvirt.errors import AnyvirtError, InvalidState, NotSupported
from anyvirt.host import Host
from anyvirt.target import Secret
from anyvirt.tasks import Job
from anyvirt.vm import VM

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGp6nXyqW0x+Yk8l3u6mB8m3oI1nJ6Vq0sN2Xk7cQp1e ops@laptop"
SHA512 = ("$6$DuM2dErhbRcRo9fz$ktJUM6f.5fTIXP6YBtkNSXZT7qMAgXbmqCMTTKtO4uORubvipLJG8WmddXsjQA1zkaz"
          "ySiprtlWH2aO.1zGIm/")


@pytest.fixture
def make(pve_host: Host) -> Iterator[Callable[..., VM]]:
    made: list[VM] = []

    def create(name: str, nics: int = 1) -> VM:
        vm = pve_host.vms.create(VMSpec(name=name, cpus=1, memory_mib=64, disks=[DiskSpec(size_gib=0.0625)],
                                        nics=[NicSpec() for _ in range(nics)], node="pve1"))
        made.append(vm)
        return vm

    create.track = made.append  # type: ignore[attr-defined]
    yield create
    for vm in reversed(made):
        try:
            vm.refresh()
            if vm.state is PowerState.RUNNING:
                vm.stop(force=True)
            vm.delete()
        except AnyvirtError:
            continue


def _driver(host: Host) -> ProxmoxDriver:
    driver = host.driver
    assert isinstance(driver, ProxmoxDriver)
    return driver


def _config_posts(traffic: Traffic, vmid: str) -> list[dict[str, str]]:
    return [traffic.bodies[i] for i, (method, url) in enumerate(traffic.requests)
            if method == "POST" and url.endswith(f"/qemu/{vmid}/config")]


def test_capabilities_declare_identity_but_not_arbitrary_user_data(pve_host: Host) -> None:
    caps = pve_host.capabilities
    assert Capability.IDENTITY in caps and Capability.GUEST_ADDRESSES in caps
    assert Capability.IDENTITY_USER_DATA not in caps
    assert "snippet" in pve_host.driver.why_not(Capability.IDENTITY_USER_DATA)


def test_identity_becomes_pves_cloud_init_keys_read_back_through_the_api(
        pve_host: Host, make: Callable[..., VM], traffic: Traffic) -> None:
    driver = _driver(pve_host)
    vm = make("web1", nics=2)
    assert driver.read_identity(vm.id) is None
    identity = Identity(users=[User("ops", ssh_keys=[KEY, KEY.replace("ops@laptop", "ci key+x")], sudo=True,
                                    password_hash=SHA512)],
                        network=[Static(["192.0.2.10/24", "2001:db8::10/64"], gateway="192.0.2.1",
                                        nameservers=["192.0.2.53", "2001:db8::53"],
                                        search=["example.com", "corp.example"]), Dhcp()])
    resolved = identity.resolve("web1", "iid-web1")
    driver.apply_identity(vm.id, resolved, Job("identity", 60))
    expected = {key: value.reveal() if isinstance(value, Secret) else value
                for key, value in compile_proxmox(resolved, "web1", 2).params.items()}
    [sent] = _config_posts(traffic, vm.id)  # one request, schema-checked, with the config's digest
    assert sent["digest"] and "delete" not in sent
    assert {k: v for k, v in sent.items() if k != "digest"} == {**expected, "ide2": "local-lvm:cloudinit"}
    held = driver.read_identity(vm.id)
    assert held is not None
    for key, value in expected.items():  # field by field, as PVE holds them
        if key != "cipassword":  # a real PVE shows it as asterisks
            assert held[key] == value, key
    assert held["ipconfig0"] == "ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::10/64"
    assert held["ipconfig1"] == "ip=dhcp"
    assert held["sshkeys"].count("%0A") == 1 and "+" not in held["sshkeys"]  # PVE's encoding
    assert held["nameserver"] == "192.0.2.53 2001:db8::53"
    assert held["searchdomain"] == "example.com corp.example"
    assert "cloudinit" in held["ide2"]


def test_a_clones_identity_replaces_the_inherited_keys_and_leaves_the_sources(
        pve_host: Host, make: Callable[..., VM], traffic: Traffic, fake: InProcessFakePve,
        pve: FakePve) -> None:
    driver = _driver(pve_host)
    source = make("tmpl-ci")
    driver.apply_identity(source.id, Identity(
        users=[User("admin", ssh_keys=[KEY], sudo=True)],
        network=[Static(["192.0.2.5/24"], nameservers=["192.0.2.53"])]).resolve("tmpl-ci", "iid-t"),
        Job("identity", 60))
    before = driver.read_identity(source.id)
    clone = source.clone("clone-ci")
    make.track(clone)  # type: ignore[attr-defined]
    # Stand-in: PVE names the clone's copy of the cloud-init drive ``vm-<newid>-cloudinit``
    # (PVE::QemuServer::Cloudinit); fakepve 0.5.0 names it like any disk, so its state is
    # given PVE's name
    fake.sync(lambda: pve.vm(int(clone.id)).config.update(
        ide2=f"local-lvm:vm-{clone.id}-cloudinit,media=cdrom"))
    inherited = driver.read_identity(clone.id)
    assert inherited is not None and inherited["ciuser"] == "admin"  # PVE copies the keys
    driver.apply_identity(clone.id, Identity().resolve("clone-ci", "iid-c"), Job("identity", 60))
    [sent] = _config_posts(traffic, clone.id)
    assert sorted(sent["delete"].split(",")) == ["ciuser", "nameserver", "sshkeys"]
    assert not any(key.startswith("ide") for key in sent)  # the inherited drive is kept, not doubled
    held = driver.read_identity(clone.id)
    assert held == {"ipconfig0": "ip=dhcp", "ide2": f"local-lvm:vm-{clone.id}-cloudinit,media=cdrom",
                    "hostname": "clone-ci"}  # PVE's guest host name is the VM's name
    assert driver.read_identity(source.id) == before


def test_what_the_native_keys_cannot_say_is_refused_before_any_request(
        pve_host: Host, make: Callable[..., VM], traffic: Traffic) -> None:
    driver = _driver(pve_host)
    vm = make("web2")
    sent_before = len(traffic.requests)
    for identity in (Identity(user_data="#cloud-config\npackages: [nginx]\n"),
                     Identity(users=[User("a", sudo=True), User("b", sudo=True)])):
        with pytest.raises(NotSupported, match="snippet") as refused:
            driver.apply_identity(vm.id, identity.resolve("web2", "iid-x"), Job("identity", 60))
        assert refused.value.capability is Capability.IDENTITY_USER_DATA
    assert not [m for m, _ in traffic.requests[sent_before:] if m != "GET"]
    assert driver.read_identity(vm.id) is None


def test_guest_agent_addresses(pve_host: Host, make: Callable[..., VM], fake: InProcessFakePve,
                               pve: FakePve) -> None:
    driver = _driver(pve_host)
    vm = make("agent-vm")
    assert driver.guest_addresses(vm.id) == [] and driver.guest_reports_up(vm.id) is None  # no agent
    pve_host.driver.native_vm(vm.id).config.post(agent="1")
    vm.start()
    # fakepve: 500 "QEMU guest agent is not running" until the guest's agent answers
    assert driver.guest_addresses(vm.id) == []
    assert driver.guest_reports_up(vm.id) is False
    fake.sync(lambda: setattr(pve.vm(int(vm.id)), "agent", {}))
    assert driver.guest_reports_up(vm.id) is True
    # fakepve's default agent answer: lo and eth0
    assert driver.guest_addresses(vm.id) == [
        ReportedAddress("00:00:00:00:00:00", "127.0.0.1", 8, "agent"),
        ReportedAddress("bc:24:11:00:00:01", "192.0.2.10", 24, "agent")]


def test_agent_network_parsing() -> None:
    # QGA's guest-network-get-interfaces as PVE passes it on (a Debian guest with docker)
    result: list[Any] = [
        {"name": "lo", "hardware-address": "00:00:00:00:00:00", "statistics": {"rx-bytes": 1},
         "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                          {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128}]},
        {"name": "eth0", "hardware-address": "BC:24:11:5E:7A:01",
         "ip-addresses": [{"ip-address": "192.0.2.10", "ip-address-type": "ipv4", "prefix": 24},
                          {"ip-address": "fe80::be24:11ff:fe5e:7a01%eth0", "ip-address-type": "ipv6",
                           "prefix": 64},
                          {"ip-address": "2001:db8::10", "ip-address-type": "ipv6", "prefix": 64}]},
        {"name": "docker0", "hardware-address": "02:42:8c:11:22:33",
         "ip-addresses": [{"ip-address": "172.17.0.1", "ip-address-type": "ipv4", "prefix": 16}]},
        {"name": "wg0"},  # no hardware address, no addresses
        "not an interface",
    ]
    reported = reported_addresses(result)
    assert ReportedAddress("BC:24:11:5E:7A:01", "192.0.2.10", 24, "agent") in reported
    assert len(reported) == 6
    kept = select_addresses(reported, ["bc:24:11:5e:7a:01"])
    assert [str(a.ip) for a in kept] == ["192.0.2.10", "2001:db8::10"]


# ---------------------------------------------------------------- clones and PVE's locks
def test_a_clone_waits_out_pves_config_lock(pve_host: Host, make: Callable[..., VM], pve: FakePve,
                                            fake: InProcessFakePve, traffic: Traffic) -> None:
    source = make("lock-src")
    source.mark_template()
    # fakepve's own catalogue: PVE's text when another clone holds the source's config lock
    fake.sync(lambda: pve.fail("POST", f"/nodes/pve1/qemu/{source.id}/clone",
                               error="config_lock_timeout", times=2))
    clone = source.clone("lock-clone", linked=True)
    make.track(clone)  # type: ignore[attr-defined]
    posts = [url for method, url in traffic.requests if method == "POST" and url.endswith("/clone")]
    assert len(posts) == 3
    assert clone.name == "lock-clone"


def test_a_lock_held_past_the_deadline_fails_within_it(pve_host: Host, make: Callable[..., VM],
                                                       pve: FakePve, fake: InProcessFakePve) -> None:
    source = make("lock-src2")
    fake.sync(lambda: pve.fail("POST", f"/nodes/pve1/qemu/{source.id}/clone", error="config_lock_timeout"))
    began = time.monotonic()
    with pytest.raises(InvalidState, match="can't lock file"):
        source.clone("never", timeout=3)
    assert time.monotonic() - began < 4
    assert "never" not in [vm.name for vm in pve_host.vms.list()]


def test_lock_timeouts_are_recognised() -> None:
    assert is_lock_timeout(AnyvirtError("cloning VM 'tmpl' as 'c3': clone failed: cfs-lock "
                                        "'storage-local-lvm' error: got lock request timeout"))
    assert is_lock_timeout(InvalidState("can't lock file '/var/lock/qemu-server/lock-9000.conf' - "
                                        "got timeout"))
    assert not is_lock_timeout(InvalidState("VM is locked (backup)"))
