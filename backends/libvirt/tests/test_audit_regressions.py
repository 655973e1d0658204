"""What a user doing the obvious things met, each fixed and kept fixed.

* ``snapshots.create(name)`` (``memory=False``, the default) of a *running*
  VM used to record memory anyway: the snapshot said ``memory=True`` and its
  revert brought the guest back running, unlike every other backend. Its mark
  then lived in the domain's metadata, which a native ``virsh snapshot-revert``
  replaced: it now lives in the snapshot's own XML.
* ``NicSpec()`` / ``NicSpec(network="default")`` was refused on a daemon
  without a libvirt network called ``default`` (a fresh daemon, the testbed,
  ``qemu:///embed``), so DESIGN's own example failed there.
* A bridge NIC read back as ``network="br0"``, which a clone/restore then
  refused as an unknown network: it reads back as ``"bridge:br0"``.
* A mark of a ``memory=False`` snapshot must not outlive it (a clone copies
  the metadata): a later snapshot of that name with memory keeps its memory.
* ``reconfigure(memory_mib=...)`` of a stopped VM to less memory left
  ``vm.memory_mib`` unchanged (only the balloon target moved); of a running
  VM it said "live" while the VM kept its size.
* An offline migration of a VM with snapshots dropped them silently (a live
  one was refused by libvirt): the live one is refused before anything moves,
  the cold one carries them (``test_parity``).
* ``clone(linked=True, count=N)`` froze the original once per clone: the
  original's chain grew N levels, clone k had k. They now share one base.
* ``delete()`` of a VM with snapshots failed on libvirt's test driver
  (it refuses the NVRAM undefine flag; a plain undefine refuses snapshots).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from anyvirt_libvirt import domxml
from anyvirt_libvirt.demo_image import disk_counter, last_counter, wait_for_counter
from libvirt_support import console_log

import anyvirt
from anyvirt.errors import NotSupported
from anyvirt.host import Host
from anyvirt.model import DiskSpec, NicSpec, PowerState, VMSpec
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM


def test_memoryless_snapshot_of_a_running_vm_reverts_to_stopped_disks(
    guest: Callable[[str], VM],
) -> None:
    vm = guest("nomem")
    log = console_log(vm)
    disk = Path(vm.info().disks[0].path or "")
    vm.start()
    wait_for_counter(log, 2)
    with_memory = vm.snapshots.create("with-memory", memory=True)
    disk_only = vm.snapshots.create("disk-only")  # memory=False is the default
    taken_at = last_counter(log)
    assert taken_at is not None
    assert with_memory.memory is True
    assert disk_only.memory is False
    assert vm.snapshots.get("disk-only").memory is False, "listing agrees with create"
    wait_for_counter(log, taken_at + 2)
    # another tool's revert (virsh snapshot-revert) replaces the domain's metadata with
    # the snapshot's older copy: what the snapshot means must not change with it
    dom = vm.native
    dom.revertToSnapshot(dom.snapshotLookupByName("disk-only", 0), 0)
    assert vm.snapshots.get("disk-only").memory is False
    assert vm.snapshots.get("with-memory").memory is True

    disk_only.revert()
    assert vm.refresh().state is PowerState.STOPPED, "no memory: nothing to resume"
    restored = disk_counter(disk)
    assert restored is not None and taken_at - 1 <= restored <= taken_at, (taken_at, restored)

    with_memory.revert()  # the marks survive a revert to a snapshot older than them
    assert vm.refresh().state is PowerState.RUNNING
    assert vm.snapshots.get("disk-only").memory is False
    assert vm.snapshots.get("with-memory").memory is True
    with_memory.delete(children=True)
    assert vm.snapshots.list() == []
    vm.stop(force=True)


def test_default_nic_without_a_default_network_is_user_mode_nat(
    host: Host, guest_image: Path, vms: Callable[[VM], VM],
) -> None:
    assert "default" not in host.info().networks, "the testbed daemon defines no networks"
    spec = VMSpec(name=unique_name("nic"), cpus=1, memory_mib=16,
                  disks=[DiskSpec(image=str(guest_image))],
                  nics=[NicSpec(), NicSpec(network="default"), NicSpec(network="user")])
    vm = vms(host.vms.create(spec))
    nics = vm.info().nics
    assert "<interface type='user'>" in vm.native.XMLDesc(0)
    # read back as asked: "default" stays the host's default, "user" stays user-mode NAT
    assert [n.network for n in nics] == ["default", "default", "user"]
    assert len({n.mac for n in nics}) == 3
    vm.start()  # QEMU really has user-mode networking
    assert vm.refresh().state is PowerState.RUNNING
    vm.stop(force=True)
    clone = vms(vm.clone(unique_name("nic-clone")))  # the info -> spec round trip
    assert [n.network for n in clone.info().nics] == ["default", "default", "user"]
    assert not {n.mac for n in clone.info().nics} & {n.mac for n in nics}


def test_bridge_nics_read_back_as_nicspec_spells_them() -> None:
    xml = """<domain type='kvm'><name>b</name><uuid>00000000-0000-0000-0000-000000000001</uuid>
      <memory unit='KiB'>16384</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>
      <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/></interface>
      <interface type='network'><source network='lan'/></interface>
      <interface type='user'><model type='virtio'/></interface>
      <interface type='user'><alias name='ua-anyvirt-default3'/></interface>
      </devices></domain>"""
    info = domxml.parse_vm_info(xml, PowerState.STOPPED, "shutoff", "node", {})
    assert [n.network for n in info.nics] == ["bridge:br0", "lan", "user", "default"]


def test_test_driver_deletes_a_vm_with_snapshots() -> None:
    with anyvirt.connect("libvirt+test:///default") as host:
        vm = host.vms.create(VMSpec(name=unique_name("snapped"), memory_mib=64))
        vm.snapshots.create("one")
        vm.start()
        vm.snapshots.create("two", memory=False)
        assert vm.snapshots.get("two").memory is False
        vm.snapshots.get("two").revert()
        assert vm.refresh().state is PowerState.STOPPED
        # a clone copies the domain's metadata, marks included: they must not stick
        clone = vm.clone(unique_name("snapped-clone"))
        clone.start()
        assert clone.snapshots.create("two", memory=True).memory is True
        clone.stop(force=True)
        clone.delete(disks=True)
        vm.delete(disks=True)
        assert not host.vms.exists(vm.id)
        assert not host.vms.exists(clone.id)


def test_memory_reconfigure_is_what_the_vm_reports() -> None:
    """Down as well as up when stopped; for the next start (False) when running."""
    with anyvirt.connect("libvirt+test:///default") as host:
        vm = host.vms.create(VMSpec(name=unique_name("resize"), cpus=2, memory_mib=64))
        try:
            assert vm.reconfigure(memory_mib=32) is False
            assert vm.refresh().memory_mib == 32
            assert host.vms.get(vm.id).memory_mib == 32, "the listing agrees"
            vm.start()
            assert vm.reconfigure(memory_mib=48) is False, "no memory hotplug: not live"
            assert vm.refresh().memory_mib == 32
            vm.stop(force=True)
            assert vm.refresh().memory_mib == 48
        finally:
            vm.refresh()
            if vm.state is not PowerState.STOPPED:
                vm.stop(force=True)
            vm.delete()


def test_live_migration_of_a_vm_with_snapshots_is_refused_before_anything_moves(
    pair: tuple[Host, Host], guest_image: Path, vms: Callable[[VM], VM],
) -> None:
    source, target = pair
    vm = vms(source.vms.create(VMSpec(name=unique_name("snapmig"), cpus=1, memory_mib=16,
                                      disks=[DiskSpec(image=str(guest_image))])))
    vm.snapshots.create("keep-me")
    volumes_before = sorted(v for p in target.native.listAllStoragePools(0) for v in p.listVolumes())
    vm.start()
    with pytest.raises(NotSupported, match="snapshots"):  # refused by the gate
        vm.migrate(to=target, live=True)
    assert source.vms.exists(vm.id) and not target.vms.exists(vm.id)
    assert [s.name for s in vm.snapshots.list()] == ["keep-me"]
    volumes_after = sorted(v for p in target.native.listAllStoragePools(0) for v in p.listVolumes())
    assert volumes_after == volumes_before
    vm.stop(force=True)


def test_bulk_linked_clones_share_one_base_until_the_original_writes(
    guest: Callable[[str], VM], vms: Callable[[VM], VM],
) -> None:
    original = guest("bulk")
    clones = [vms(c) for c in original.clone(unique_name("bulk"), linked=True, count=3)]
    base = original.info().disks[0].backing
    assert base, "the first linked clone froze the original's disk"
    # not one more level per clone: every clone, and the original, sit on that one base
    assert [c.info().disks[0].backing for c in clones] == [base] * 3
    overlay = original.info().disks[0].path

    for vm in (original, clones[0]):
        vm.start()
    for vm in (original, clones[0]):
        wait_for_counter(console_log(vm), 1)  # both boot; the original writes its overlay
    for vm in (original, clones[0]):
        vm.stop(force=True)
    later = vms(original.clone(unique_name("later"), linked=True))
    # the original's overlay has data now: it is frozen in turn, under a new overlay
    assert later.info().disks[0].backing == overlay
    assert original.info().disks[0].backing == overlay
