"""Deployment on a real libvirtd: clones with identity from one template, on the daemon
with the isolated network, their seeds read back from the pool volumes field by field.

The boot half of the issue (each clone's own hostname on its console and its own
lease through ``vm.addresses()``) is test_deployment_boot.py.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt
import pytest
import yaml
from anyvirt_libvirt.seeds import seed_volume_name
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from anyvirt_libvirt.testbed.network import IsolatedNetwork

import anyvirt
from anyvirt import DiskSpec, Identity, NicSpec, User, VMSpec
from anyvirt.host import Host
from anyvirt.model import Capability

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
