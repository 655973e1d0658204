"""Deployment: identity applied at create and clone time, read back from the platform;
guest addresses and readiness.

Every backend holds the identity its own way (a NoCloud seed ISO, guestinfo keys,
PVE's cloud-init keys), so the read-back (``driver.read_identity``) is checked for
what each of them must carry: the user, the key, and where the platform stores one,
each VM's own host name and instance id.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import urllib.parse
from collections.abc import Callable, Iterator

import pytest

from anyvirt.deployment import Identity, User
from anyvirt.errors import InvalidSpec, Timeout
from anyvirt.host import Host
from anyvirt.model import Capability, PowerState
from anyvirt.testing.plugin import unique_name
from anyvirt.testing.suite.base import ContractTests
from anyvirt.testing.suite.spy import recording
from anyvirt.vm import VM

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "ops@contract")
KEY_BODY = KEY.split()[1]
IDENTITY = Identity(users=[User("opsuser", ssh_keys=[KEY], sudo=True)])


def _readings(text: str) -> Iterator[str]:
    """A read-back value as stored, and decoded the ways platforms encode it (URL-quoted,
    base64, gzip+base64)."""
    yield text
    yield urllib.parse.unquote(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    yield raw.decode(errors="replace")


def read_back(host: Host, vm: VM) -> str:
    """Everything the platform holds of the VM's identity, decoded, as one text."""
    found = host.driver.read_identity(vm.id)
    assert found is not None, f"{host.backend} holds no identity for {vm.name!r}"
    return "\n".join(reading for value in found.values() for reading in _readings(value))


def check_identity(host: Host, vm: VM, hostname: str) -> str:
    """The read-back carries the user and the key, and the VM's own host name (the
    platform's seed, or its name where the platform takes the host name from it)."""
    text = read_back(host, vm)
    assert "opsuser" in text and KEY_BODY in text
    assert hostname in text or hostname == vm.name
    return text


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.IDENTITY)
class TestDeployment(ContractTests):
    def test_create_with_identity_reads_back(self, anyvirt_host: Host,
                                             make_vm: Callable[..., VM]) -> None:
        vm = make_vm("idc", identity=IDENTITY)
        check_identity(anyvirt_host, vm, vm.name)
        assert vm.refresh().state is PowerState.STOPPED

    @pytest.mark.anyvirt_requires(Capability.FULL_CLONE)
    def test_bulk_clone_each_its_own_identity(self, anyvirt_host: Host,
                                              make_vm: Callable[..., VM]) -> None:
        original = make_vm("idt", identity=IDENTITY)
        before = anyvirt_host.driver.read_identity(original.id)
        prefix = unique_name("idb")
        clones = original.clone(prefix, count=3, concurrency=2, identity=IDENTITY)
        for clone in clones:
            make_vm.track(clone)  # type: ignore[attr-defined]
        assert [c.name for c in clones] == [f"{prefix}-{i}" for i in (1, 2, 3)]
        texts = [check_identity(anyvirt_host, c, c.name) for c in clones]
        assert len(set(texts)) == 3, "each clone has its own identity (host name, instance id)"
        for clone, text in zip(clones, texts, strict=True):
            others = [c.name for c in clones if c is not clone]
            if clone.name in text:  # the platform stores host names: no other clone's
                assert not any(f"{other}\n" in text for other in others)
        assert anyvirt_host.driver.read_identity(original.id) == before, \
            "a clone's identity never changes its original's"

    @pytest.mark.anyvirt_requires(Capability.FULL_CLONE, Capability.VM_DELETE)
    def test_delete_removes_its_seed_and_nothing_else(self, anyvirt_host: Host,
                                                      make_vm: Callable[..., VM]) -> None:
        original = make_vm("idd", identity=IDENTITY)
        before = anyvirt_host.driver.read_identity(original.id)
        clone = make_vm.track(original.clone(unique_name("idd-c"), identity=IDENTITY))  # type: ignore[attr-defined]
        clone.delete()
        assert not anyvirt_host.vms.exists(clone.id)
        assert anyvirt_host.driver.read_identity(original.id) == before

    @pytest.mark.anyvirt_requires(Capability.FULL_CLONE)
    def test_shared_hostname_refused_before_anything_is_sent(
            self, anyvirt_host: Host, make_vm: Callable[..., VM]) -> None:
        original = make_vm("idr")
        fixed = Identity(users=IDENTITY.users, hostname="same")
        with recording(anyvirt_host) as calls, pytest.raises(InvalidSpec):
            original.clone(unique_name("idr-c"), count=2, identity=fixed)
        assert calls == []

    @pytest.mark.anyvirt_requires(Capability.FULL_CLONE)
    def test_not_an_identity_is_refused(self, anyvirt_host: Host,
                                        make_vm: Callable[..., VM]) -> None:
        original = make_vm("idn")
        with recording(anyvirt_host) as calls, pytest.raises(InvalidSpec):
            original.clone(unique_name("idn-c"), identity={"hostname": "x"})  # type: ignore[call-overload]
        assert calls == []


@pytest.mark.anyvirt_requires(Capability.VM_CREATE, Capability.GUEST_ADDRESSES)
class TestGuestAddresses(ContractTests):
    def test_stopped_vm_has_no_address_and_is_not_ready(self, anyvirt_host: Host,
                                                        make_vm: Callable[..., VM]) -> None:
        vm = make_vm("ga")
        assert vm.addresses() == []
        with pytest.raises(Timeout, match="not running"):
            vm.wait_ready(timeout=0.5)

    @pytest.mark.anyvirt_requires(Capability.START, Capability.POWER_OFF)
    def test_addresses_are_the_vms_own_and_routable(self, anyvirt_host: Host,
                                                    make_vm: Callable[..., VM]) -> None:
        vm = make_vm("gar")
        vm.start()
        macs = {nic.mac for nic in vm.info().nics}
        for address in vm.addresses():
            assert address.mac in macs
            assert not (address.ip.is_link_local or address.ip.is_loopback)
