"""Deployment on a real libvirtd: clones with identity from one template, on the daemon
with the isolated network, their seeds read back from the pool volumes field by field.

The boot half of the issue (each clone's own hostname on its console and its own
lease through ``vm.addresses()``) is test_deployment_boot.py.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt
import pytest
import yaml
from anyvirt_libvirt.connection import ensure_event_loop
from anyvirt_libvirt.seeds import seed_volume_name
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from anyvirt_libvirt.testbed.network import IsolatedNetwork

import anyvirt
from anyvirt import DiskSpec, Identity, NicSpec, User, VMSpec
from anyvirt.errors import ConnectionFailed
from anyvirt.host import Host
from anyvirt.model import Capability
from anyvirt.tasks import Task

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@lv"
IDENT = Identity(users=[User("ops", ssh_keys=[KEY], sudo=True)])


@pytest.fixture
def host(libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork]) -> Iterator[Host]:
    daemon, _ = libvirt_isolated_daemon
    with anyvirt.connect(daemon.anyvirt_uri) as connected:
        yield connected
        made = [vm for vm in connected.vms.list() if vm.name.startswith("dep-")]
        for vm in sorted(made, key=lambda vm: vm.template):  # clones before their originals
            vm.delete(disks=True)


def _pool_volumes(daemon: LibvirtDaemon) -> set[str]:
    conn = daemon.open()
    try:
        pool = conn.storagePoolLookupByName("default")
        pool.refresh(0)
        return {vol.name() for vol in pool.listAllVolumes(0)}
    finally:
        conn.close()


def _seed_drives(daemon: LibvirtDaemon, vm_id: str) -> list[ET.Element]:
    conn = daemon.open()
    try:
        xml = conn.lookupByUUIDString(vm_id).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        conn.close()
    return ET.fromstring(xml).findall("devices/disk[@device='cdrom']")


def test_clones_of_one_template_each_get_their_own_seed_volume(
    host: Host, libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork],
) -> None:
    daemon, network = libvirt_isolated_daemon
    assert {Capability.IDENTITY, Capability.GUEST_ADDRESSES} <= host.capabilities
    run = uuid.uuid4().hex[:6]
    base = host.vms.create(VMSpec(name=f"dep-{run}-tmpl", memory_mib=64,
                                  disks=[DiskSpec(size_gib=0.0625)],
                                  nics=[NicSpec(network=network.name)], identity=IDENT))
    template_seed = host.driver.read_identity(base.id)
    assert template_seed is not None
    assert yaml.safe_load(template_seed["meta-data"])["local-hostname"] == base.name
    base.mark_template()

    clones = base.clone(f"dep-{run}-web", linked=True, count=3, concurrency=2, identity=IDENT)
    assert [c.name for c in clones] == [f"dep-{run}-web-{i}" for i in (1, 2, 3)]
    volumes = _pool_volumes(daemon)
    instance_ids = set()
    for clone in clones:
        assert seed_volume_name(clone.name) in volumes
        (drive,) = _seed_drives(daemon, clone.id)  # the inherited drive, now with its own seed
        assert drive.find("readonly") is not None
        alias = drive.find("alias")
        assert alias is not None and alias.get("name") == "ua-anyvirt-seed"
        source = drive.find("source")
        assert source is not None and source.get("file", "").endswith(seed_volume_name(clone.name))
        seed = host.driver.read_identity(clone.id)
        assert seed is not None
        meta = yaml.safe_load(seed["meta-data"])
        assert meta["local-hostname"] == clone.name
        instance_ids.add(meta["instance-id"])
        assert seed["user-data"].startswith("#cloud-config\n")
        user = yaml.safe_load(seed["user-data"])["users"][0]
        assert user["name"] == "ops" and user["ssh_authorized_keys"] == [KEY]
        net = yaml.safe_load(seed["network-config"])
        (mac,) = [n.mac for n in clone.info().nics]
        assert mac in str(net), "the network config matches the clone's own NIC"
    assert len(instance_ids) == 3
    assert host.driver.read_identity(base.id) == template_seed, "the template's seed is unchanged"

    clones[0].delete()
    after = _pool_volumes(daemon)
    assert seed_volume_name(clones[0].name) not in after
    assert {seed_volume_name(c.name) for c in clones[1:]} | {seed_volume_name(base.name)} <= after
    assert host.driver.read_identity(clones[1].id) is not None


def test_a_clone_without_identity_keeps_the_template_seed_and_its_delete_leaves_it(
    host: Host, libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork],
) -> None:
    daemon, network = libvirt_isolated_daemon
    run = uuid.uuid4().hex[:6]
    base = host.vms.create(VMSpec(name=f"dep-{run}-src", memory_mib=64,
                                  disks=[DiskSpec(size_gib=0.0625)],
                                  nics=[NicSpec(network=network.name)], identity=IDENT))
    plain = base.clone(f"dep-{run}-plain")
    assert host.driver.read_identity(plain.id) is None, "it owns no seed"
    plain.delete()
    assert seed_volume_name(base.name) in _pool_volumes(daemon)
    assert host.driver.read_identity(base.id) is not None


def test_a_seed_that_cannot_be_written_leaves_no_vm_and_spares_the_other_vms_seed(
    host: Host, libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork],
) -> None:
    """A clone that still reads a deleted VM's seed keeps it; a new VM of that name cannot
    take the volume: its create fails and removes the VM (all or none)."""
    daemon, network = libvirt_isolated_daemon
    run = uuid.uuid4().hex[:6]
    spec = VMSpec(name=f"dep-{run}-y", memory_mib=64, disks=[DiskSpec(size_gib=0.0625)],
                  nics=[NicSpec(network=network.name)], identity=IDENT)
    first = host.vms.create(spec)
    reader = first.clone(f"dep-{run}-z")  # inherits the seed drive, owns no seed
    first.delete()
    assert seed_volume_name(first.name) in _pool_volumes(daemon), "the clone still reads it"
    before = _pool_volumes(daemon)
    with pytest.raises(anyvirt.AlreadyExists, match="in use by VM"):
        host.vms.create(spec)
    assert [vm.name for vm in host.vms.list() if vm.name.startswith(f"dep-{run}")] == [reader.name]
    assert _pool_volumes(daemon) == before
    reader.delete()  # the last reader of the deleted VM's seed takes it along
    assert seed_volume_name(first.name) not in _pool_volumes(daemon)


def test_an_iso_of_the_users_own_is_never_taken_for_a_seed(
    host: Host, libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork],
) -> None:
    """A CD-ROM the user attached (its file named like a seed, of a VM that does not
    exist) stays in its drive through a clone with identity, and deleting the VMs that
    use it leaves the file."""
    daemon, network = libvirt_isolated_daemon
    run = uuid.uuid4().hex[:6]
    vm = host.vms.create(VMSpec(name=f"dep-{run}-u", memory_mib=64,
                                disks=[DiskSpec(size_gib=0.0625)],
                                nics=[NicSpec(network=network.name)]))
    users_iso = f"dep-{run}-gone-cidata.iso"
    conn = daemon.open()
    try:
        pool = conn.storagePoolLookupByName("default")
        vol = pool.createXML(f"<volume><name>{users_iso}</name><capacity>2048</capacity>"
                             "<target><format type='raw'/></target></volume>", 0)
        root = ET.fromstring(conn.lookupByUUIDString(vm.id).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        devices = root.find("devices")
        assert devices is not None
        cdrom = ET.SubElement(devices, "disk", type="file", device="cdrom")
        ET.SubElement(cdrom, "source", file=vol.path())
        ET.SubElement(cdrom, "target", dev="sdc", bus="sata")
        ET.SubElement(cdrom, "readonly")
        conn.defineXML(ET.tostring(root, encoding="unicode"))
    finally:
        conn.close()
    clone = vm.clone(f"dep-{run}-c", identity=IDENT)
    drives = _seed_drives(daemon, clone.id)
    sources = sorted(d.find("source").get("file", "") for d in drives)  # type: ignore[union-attr]
    assert [s.rsplit("/", 1)[-1] for s in sources] == sorted([users_iso, seed_volume_name(clone.name)])
    clone.delete()
    vm.delete()
    volumes = _pool_volumes(daemon)
    assert users_iso in volumes and seed_volume_name(clone.name) not in volumes


def test_addresses_of_a_stopped_vm(host: Host,
                                   libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork]) -> None:
    _, network = libvirt_isolated_daemon
    vm = host.vms.create(VMSpec(name=f"dep-{uuid.uuid4().hex[:6]}-a", memory_mib=64,
                                nics=[NicSpec(network=network.name)]))
    assert vm.addresses() == []


def test_each_clone_with_identity_is_defined_once(
    host: Host, libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork],
) -> None:
    """The seed is written from MACs chosen before the define, so each clone is defined
    once, its seed already in its drive: the daemon's own lifecycle events show one
    ``DEFINED_ADDED`` per clone and no ``DEFINED_UPDATED`` (a second define), and the
    seed's network config names the MACs the clone really has."""
    daemon, network = libvirt_isolated_daemon
    run = uuid.uuid4().hex[:6]
    template = host.vms.create(VMSpec(name=f"dep-{run}-t", memory_mib=64,
                                      disks=[DiskSpec(size_gib=0.0625)],
                                      nics=[NicSpec(network=network.name),
                                            NicSpec(network=network.name)]))
    template.mark_template()
    ensure_event_loop()
    conn = daemon.open()
    heard: list[tuple[str, int]] = []
    lock = threading.Lock()

    def lifecycle(_conn: object, dom: libvirt.virDomain, event: int, detail: int,
                  _opaque: object) -> None:
        if event == libvirt.VIR_DOMAIN_EVENT_DEFINED:
            with lock:
                heard.append((dom.name(), detail))

    callback = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                           lifecycle, None)
    try:
        clones = template.clone(f"dep-{run}-once", linked=True, count=3, identity=IDENT)
        names = {clone.name for clone in clones}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if sum(1 for name, _ in heard if name in names) >= 3:
                    break
            time.sleep(0.05)
        time.sleep(0.5)  # a second define would follow within this
    finally:
        conn.domainEventDeregisterAny(callback)
        conn.close()
    with lock:
        ours = sorted((name, detail) for name, detail in heard if name in names)
    assert ours == sorted((name, libvirt.VIR_DOMAIN_EVENT_DEFINED_ADDED) for name in names)
    for clone in clones:
        seed = host.driver.read_identity(clone.id)
        assert seed is not None
        macs = [nic.mac for nic in clone.info().nics]
        assert len(macs) == 2 and len(set(macs)) == 2
        config = yaml.safe_load(seed["network-config"])
        assert sorted(str(mac) for mac in macs) == sorted(
            entry["match"]["macaddress"] for entry in config["ethernets"].values())


def test_a_daemon_killed_mid_seed_upload_leaves_no_volume_once_reconnected() -> None:
    """The daemon dies while a clone's seed ISO is being uploaded into its volume: the
    clone fails (``ConnectionFailed``), its clean-up cannot reach the dead daemon, and
    the half-written seed volume (and the clone's overlay) stay in the pool. The
    in-flight record names them: once the daemon is back, the next anyvirt call
    reconnects and sweeps them, and nothing of the clone is left."""
    with LibvirtDaemon(name="seed-kill") as daemon, \
            anyvirt.connect(daemon.anyvirt_uri) as connected:
        template = connected.vms.create(VMSpec(name="dep-kill-t", memory_mib=64,
                                               disks=[DiskSpec(size_gib=0.0625)], nics=[]))
        template.mark_template()
        before = set(os.listdir(daemon.pool_path))
        seen: list[str] = []
        clone_name = "dep-kill-c"

        def kill_mid_upload(task: Task[object]) -> None:
            done, total = _upload_progress(task.message, clone_name)
            if done is not None and done < total and daemon.running:
                seen.extend(sorted(set(os.listdir(daemon.pool_path)) - before))
                daemon.kill()

        with pytest.raises(ConnectionFailed):
            template.clone(clone_name, linked=True, identity=IDENT, on_progress=kill_mid_upload)
        assert seed_volume_name(clone_name) in seen, "killed while the seed was uploading"
        assert seed_volume_name(clone_name) in os.listdir(daemon.pool_path), \
            "the dead daemon kept the half-written seed"
        daemon.restart()
        assert [vm.name for vm in connected.vms.list()] == [template.name]  # reconnects, sweeps
        assert set(os.listdir(daemon.pool_path)) == before
        template.delete(disks=True)


def _upload_progress(message: str, vm_name: str) -> tuple[int | None, int]:
    """(bytes sent, bytes in all) from a seed upload's progress message for ``vm_name``."""
    prefix = f"seed of {vm_name}: "
    if not message.startswith(prefix):
        return None, 0
    done, _, total = message[len(prefix):].removesuffix(" bytes").partition(" of ")
    return int(done), int(total)
