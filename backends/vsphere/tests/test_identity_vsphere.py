"""Deployment primitives on vcsim: the identity in extraConfig, and what Tools report.

Called through ``host.driver`` (the SPI) until the gate wires them into VMSpec/clone and
the handles. The guestinfo keys are read back through plain pyVmomi (a PropertyCollector
with an explicit path) and decoded by Debian's cloud-init, by the VMware datasource's own
``decode``; vcsim runs no guests, so ``guest.net`` parsing is proven on pyVmomi objects
built with the real data shape, and the real call on vcsim answers [] without error.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from anyvirt_vsphere.driver import VSphereDriver
from anyvirt_vsphere.guest import decode, reported_addresses
from anyvirt_vsphere.sdk import vim, vmodl
from anyvirt_vsphere.tasks import wait_task
from vsphere_support import vsphere_driver

from anyvirt.addresses import ReportedAddress, select_addresses
from anyvirt.deployment import Identity, Static, User, compile_nocloud, compile_vsphere
from anyvirt.deployment.documents import meta_data, network_config
from anyvirt.errors import InvalidSpec
from anyvirt.host import Host
from anyvirt.model import Capability, PowerState, VMSpec
from anyvirt.tasks import Job

DEBIAN_PYTHON = "/usr/bin/python3"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGp6nXyqW0x+Yk8l3u6mB8m3oI1nJ6Vq0sN2Xk7cQp1e ops@laptop")
DECODE = r'''
import json, sys
from cloudinit.sources.DataSourceVMware import decode, load_json_or_yaml
config = json.load(sys.stdin)
md = load_json_or_yaml(decode("metadata", config["guestinfo.metadata.encoding"],
                              config["guestinfo.metadata"]))
ud = decode("userdata", config["guestinfo.userdata.encoding"], config["guestinfo.userdata"])
print(json.dumps({"meta": md, "user_data": ud if isinstance(ud, str) else ud.decode()}))
'''


def _extra_config(driver: VSphereDriver, vm_id: str) -> dict[str, str]:
    """config.extraConfig through plain pyVmomi: one PropertyCollector call, explicit path."""
    ref = driver.native_vm(vm_id)
    pc = driver.session.content.propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=ref)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine,
                                                            pathSet=["config.extraConfig"])])
    [content] = pc.RetrieveContents([spec])
    options = content.propSet[0].val if content.propSet else []
    return {str(option.key): str(option.value) for option in options
            if str(option.key).startswith("guestinfo.")}


def _set_extra_config(driver: VSphereDriver, vm_id: str, values: dict[str, str]) -> None:
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=key, value=value)
                                          for key, value in values.items()])
    wait_task(driver.inventory.collector, driver.native_vm(vm_id).ReconfigVM_Task(spec=spec),
              Job("wait", 60), "a test's reconfigure")


VENDOR_DATA = {"guestinfo.vendordata": "I2Nsb3VkLWNvbmZpZwo=", "guestinfo.vendordata.encoding": "base64"}


def _decoded_by_cloud_init(config: dict[str, str]) -> Any:
    if subprocess.run([DEBIAN_PYTHON, "-c", "import cloudinit"], capture_output=True).returncode:
        pytest.fail("Debian's cloud-init is not installed: run scripts/system-packages.sh test")
    done = subprocess.run([DEBIAN_PYTHON, "-c", DECODE], input=json.dumps(config), text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


IDENTITY = Identity(
    users=[User("ops", ssh_keys=[KEY], sudo=True)],
    network=[Static(["192.0.2.10/24"], gateway="192.0.2.1", nameservers=["192.0.2.53"])],
    user_data="#cloud-config\npackages: [nginx]\n")


def test_identity_capabilities_are_declared(vsphere_host: Host) -> None:
    caps = vsphere_host.capabilities
    assert {Capability.IDENTITY, Capability.IDENTITY_USER_DATA, Capability.GUEST_ADDRESSES} <= caps


def test_identity_lands_in_extra_config_as_the_vmware_datasource_reads_it(
        vsphere_host: Host, spec_for: Callable[[str], VMSpec]) -> None:
    driver = vsphere_driver(vsphere_host)
    vm = vsphere_host.vms.create(spec_for("seeded"))
    try:
        assert driver.read_identity(vm.id) is None
        resolved = IDENTITY.resolve("seeded", "iid-seeded")
        driver.apply_identity(vm.id, resolved, Job("identity", 60))
        macs = [nic.mac for nic in vm.info().nics if nic.mac]
        config = _extra_config(driver, vm.id)
        assert config == compile_vsphere(resolved, macs)
        seen = _decoded_by_cloud_init(config)
        assert seen["meta"] == {**meta_data(resolved), "network": network_config(resolved, macs)}
        assert seen["meta"]["local-hostname"] == "seeded"
        assert seen["meta"]["instance-id"] == "iid-seeded"
        assert seen["user_data"] == compile_nocloud(resolved, macs).user_data
        assert KEY in seen["user_data"] and "nginx" in seen["user_data"]
        # read back field by field by the driver too
        held = driver.read_identity(vm.id)
        assert held is not None
        assert json.loads(held["guestinfo.metadata"]) == seen["meta"]
        assert held["guestinfo.userdata"] == seen["user_data"]
    finally:
        vm.delete()


def test_a_clones_identity_replaces_the_inherited_seed_and_leaves_the_sources(
        vcenter_host: Host, spec_for: Callable[[str], VMSpec]) -> None:
    driver = vsphere_driver(vcenter_host)
    source = vcenter_host.vms.create(spec_for("seed-source"))
    clone = None
    try:
        driver.apply_identity(source.id, Identity().resolve("seed-source", "iid-source"), Job("id", 60))
        # a vendordata the source carries (set by someone else): a clone must not keep it
        _set_extra_config(driver, source.id, VENDOR_DATA)
        before = _extra_config(driver, source.id)
        assert "guestinfo.vendordata" in before
        clone = source.clone("seed-clone")
        # Stand-in: a vCenter's clone copies the source's extraConfig; vcsim 0.24.2's CloneVM
        # does not, so the clone is given what it would have inherited.
        _set_extra_config(driver, clone.id, before)
        assert _extra_config(driver, clone.id) == before
        resolved = Identity().resolve("seed-clone", "iid-clone")
        driver.apply_identity(clone.id, resolved, Job("id", 60))
        after = _extra_config(driver, clone.id)
        # an empty value removes the option on vSphere; vcsim keeps it, empty, which the
        # datasource reads as no vendordata at all
        assert after.get("guestinfo.vendordata", "") == ""
        assert after.get("guestinfo.vendordata.encoding", "") == ""
        held = driver.read_identity(clone.id)
        assert held is not None and sorted(held) == ["guestinfo.metadata", "guestinfo.userdata"]
        assert _decoded_by_cloud_init(after)["meta"]["instance-id"] == "iid-clone"
        assert _extra_config(driver, source.id) == before  # the source's seed is as it was
    finally:
        if clone is not None:
            clone.delete()
        source.delete()


def test_too_big_an_identity_is_refused_before_any_task(
        vsphere_host: Host, spec_for: Callable[[str], VMSpec]) -> None:
    driver = vsphere_driver(vsphere_host)
    vm = vsphere_host.vms.create(spec_for("seed-too-big"))
    try:
        blob = base64.b64encode(os.urandom(50_000)).decode()
        big = Identity(user_data=f"#cloud-config\nwrite_files:\n- path: /x\n  content: {blob}\n")
        with pytest.raises(InvalidSpec):
            driver.apply_identity(vm.id, big.resolve("seed-too-big", "iid-big"), Job("id", 60))
        assert _extra_config(driver, vm.id) == {}
    finally:
        vm.delete()


def test_vcsim_reports_no_addresses_and_tools_not_running(
        vsphere_host: Host, spec_for: Callable[[str], VMSpec]) -> None:
    driver = vsphere_driver(vsphere_host)
    vm = vsphere_host.vms.create(spec_for("seed-running"))
    try:
        vm.start()
        assert vm.state is PowerState.RUNNING
        # vcsim runs no guests: guest.net lists the NICs' MACs and no IP address
        assert driver.guest_addresses(vm.id) == []
        assert driver.guest_reports_up(vm.id) is False
    finally:
        if vm.state is PowerState.RUNNING:
            vm.stop(force=True)
        vm.delete()


def _nic(mac: str | None, addresses: list[tuple[str, int]], plain: list[str] | None = None) -> Any:
    """A GuestNicInfo as VMware Tools fill it (pyVmomi's own data object)."""
    config = vim.net.IpConfigInfo(ipAddress=[
        vim.net.IpConfigInfo.IpAddress(ipAddress=ip, prefixLength=prefix, state="preferred")
        for ip, prefix in addresses]) if addresses else None
    return vim.vm.GuestInfo.NicInfo(macAddress=mac, connected=True, deviceConfigId=4000,
                                    network="VM Network", ipConfig=config,
                                    ipAddress=plain if plain is not None else [ip for ip, _ in addresses])


def test_guest_net_parsing() -> None:
    net = [
        _nic("00:50:56:9a:01:02", [("192.0.2.10", 24), ("fe80::250:56ff:fe9a:102", 64),
                                   ("2001:db8::10", 64)]),
        _nic(None, [("172.17.0.1", 16)]),  # docker0 in the guest: no virtual NIC behind it
        _nic("00:50:56:9a:01:03", [], plain=["198.51.100.7"]),  # older Tools: no ipConfig
        _nic("00:50:56:9a:01:04", []),  # a NIC with no address yet
    ]
    reported = reported_addresses(net)
    assert reported == [
        ReportedAddress("00:50:56:9a:01:02", "192.0.2.10", 24, "agent"),
        ReportedAddress("00:50:56:9a:01:02", "fe80::250:56ff:fe9a:102", 64, "agent"),
        ReportedAddress("00:50:56:9a:01:02", "2001:db8::10", 64, "agent"),
        ReportedAddress("00:50:56:9a:01:03", "198.51.100.7", None, "agent"),
    ]
    kept = select_addresses(reported, ["00:50:56:9a:01:02", "00:50:56:9a:01:03"])
    assert [str(a.ip) for a in kept] == ["192.0.2.10", "2001:db8::10", "198.51.100.7"]


def test_guestinfo_encodings_the_datasource_names_are_decoded() -> None:
    assert decode("base64", "aGk=") == "hi"
    assert decode("", "plain") == "plain"
    with pytest.raises(ValueError, match="unknown guestinfo encoding"):
        decode("rot13", "x")
