"""Issue 19's acceptance on a real libvirtd: linked clones of one template, each given its
identity by anyvirt alone, boot as machines of their own.

Everything goes through the public API: a template made from the Linux test guest's boot
disk with a NIC on the isolated network, ``clone(count=3, concurrency=3, identity=...)``,
``start()``, ``wait_ready()`` and ``addresses()``. Nothing is attached by hand: each
clone's NoCloud seed is the one anyvirt wrote (pycdlib, uploaded as a pool volume, on the
seed CD-ROM). The guest prints what it applied on its serial console, and each clone must
show its own name as hostname, the identity's key, and the address its DHCP client took,
which must also be the one ``vm.addresses()`` reports from the network's lease.
The CLI's ``anyvirt vm clone --count --ssh-key --wait-ready`` is held to the same.
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from anyvirt_libvirt.addresses import nic_macs
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from anyvirt_libvirt.testbed.linux_guest import ConsoleFacts, wait_for_console
from anyvirt_libvirt.testbed.network import IsolatedNetwork
from click.testing import CliRunner
from libvirt_support import console_log

from anyvirt import DiskSpec, Identity, NicSpec, User, VMSpec
from anyvirt.cli.main import cli
from anyvirt.host import Host
from anyvirt.model import PowerState
from anyvirt.vm import VM

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@deploy"
READY_TIMEOUT = 150.0  # a bound, not the expected time: three TCG guests on a shared 2-core machine


def _applied_everything(facts: ConsoleFacts) -> bool:
    return facts.seed_done and facts.hostname is not None and bool(facts.addresses)


def test_linked_clones_with_identity_boot_with_their_own_hostname_key_and_lease(
    tcg_host: Host,
    libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork],
    linux_guest_disk: Path,
    vms: Callable[[VM], VM],
) -> None:
    daemon, network = libvirt_isolated_daemon
    run = uuid.uuid4().hex[:6]
    template = vms(tcg_host.vms.create(VMSpec(
        name=f"boot-{run}", cpus=1, memory_mib=192, disks=[DiskSpec(image=str(linux_guest_disk))],
        nics=[NicSpec(network=network.name)])))
    template.mark_template()

    identity = Identity(users=[User("ops", ssh_keys=[KEY], sudo=True)])
    clones = template.clone(f"boot-{run}-web", linked=True, count=3, concurrency=3, identity=identity)
    for clone in reversed(clones):  # the vms fixture removes in reverse: clones before the template
        vms(clone)
    assert [c.name for c in clones] == [f"boot-{run}-web-{i}" for i in (1, 2, 3)]

    started = time.monotonic()
    for clone in clones:
        clone.start()
    ready = {clone.name: clone.wait_ready(timeout=READY_TIMEOUT) for clone in clones}
    facts = {clone.name: wait_for_console(console_log(clone), _applied_everything, READY_TIMEOUT)
             for clone in clones}
    booted = time.monotonic() - started

    conn = daemon.open()
    try:
        leased = set()
        for clone in clones:
            assert clone.refresh().state is PowerState.RUNNING
            dom = conn.lookupByUUIDString(clone.id)
            assert ET.fromstring(dom.XMLDesc(0)).get("type") == "qemu"  # TCG, as ?accel=tcg asked
            seen = facts[clone.name]
            assert seen.hostname == clone.name, "its own name, from the seed anyvirt wrote"
            assert seen.instance_id is not None
            assert seen.ssh_keys == (("ops", KEY),)
            (mac,) = nic_macs(dom)
            (line,) = seen.addresses
            assert line.mac == mac
            applied = ipaddress.ip_interface(line.address)
            assert applied.network == network.subnet
            (address,) = clone.addresses()
            assert (address.mac, address.ip, address.prefix, address.source) == (mac, applied.ip, 24, "lease")
            assert ready[clone.name] == [address]
            leased.add(applied.ip)
        assert len(leased) == 3, "each clone its own lease"
        assert len({facts[c.name].instance_id for c in clones}) == 3
    finally:
        conn.close()
    print(f"\n3 linked clones with identity booted to ready in {booted:.1f}s (TCG)")


def test_the_cli_clones_with_a_key_file_and_waits_until_each_clone_is_ready(
    tcg_host: Host,
    libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork],
    linux_guest_disk: Path,
    vms: Callable[[VM], VM],
    tmp_path: Path,
) -> None:
    daemon, network = libvirt_isolated_daemon
    run = uuid.uuid4().hex[:6]
    template = vms(tcg_host.vms.create(VMSpec(
        name=f"cli-{run}", cpus=1, memory_mib=192, disks=[DiskSpec(image=str(linux_guest_disk))],
        nics=[NicSpec(network=network.name)])))
    template.mark_template()
    key_file = tmp_path / "ops.pub"
    key_file.write_text(f"{KEY}\n")

    result = CliRunner().invoke(cli, [
        "--json", "vm", "clone", f"{daemon.anyvirt_uri}&accel=tcg", template.name, f"cli-{run}-web",
        "--linked", "--count", "2", "--concurrency", "2", "--ssh-key", str(key_file), "--user", "ops",
        "--wait-ready", "--timeout", str(READY_TIMEOUT)])
    made = [vms(tcg_host.vms.get(name)) for name in (f"cli-{run}-web-1", f"cli-{run}-web-2")
            if name in {vm.name for vm in tcg_host.vms.list()}]
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [entry["vm"]["name"] for entry in report] == [vm.name for vm in made]
    leased = set()
    for entry, clone in zip(report, made, strict=True):
        assert entry["vm"]["state"] == "running"
        seen = wait_for_console(console_log(clone), _applied_everything, READY_TIMEOUT)
        assert seen.hostname == clone.name
        assert seen.ssh_keys == (("ops", KEY),)
        (line,) = seen.addresses
        applied = ipaddress.ip_interface(line.address)
        (address,) = entry["addresses"]
        assert (address["mac"], address["ip"], address["source"]) == (line.mac, str(applied.ip), "lease")
        leased.add(applied.ip)
    assert len(leased) == 2
