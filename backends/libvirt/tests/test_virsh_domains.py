"""Domains shaped by other tools (virsh-style XML defined straight into the daemon),
then cloned, deleted, backed up, reconfigured through anyvirt, and compared with
libvirt's own view afterwards: the domain XML, the pool's volumes, the files.

Issue 8 measured each of these going wrong: a full clone sharing a volume disk,
a clone deleting its original's NVRAM, '.'/'..' names deleting other VMs' state,
None sizes for disks the pool had not seen, 1024 vs 512 MiB for one domain,
direct/ethernet NICs without a source, typed errors of the wrong kind.
"""

from __future__ import annotations

import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from anyvirt.errors import AlreadyExists, InvalidSpec, InvalidState
from anyvirt.host import Host
from anyvirt.model import PowerState, VMSpec
from anyvirt.tasks import Job
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM

MIB = 1024 * 1024


def _pool(host: Host) -> libvirt.virStoragePool:
    return host.native.storagePoolLookupByName("default")


def _pool_dir(host: Host) -> Path:
    return Path(ET.fromstring(_pool(host).XMLDesc(0)).findtext("target/path") or "")


def _volumes(host: Host) -> set[str]:
    pool = _pool(host)
    pool.refresh(0)
    return set(pool.listVolumes())


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _domain_xml(name: str, disks: str, extra_devices: str = "", os_extra: str = "",
                memory_kib: int = 16384, current_kib: int | None = None) -> str:
    """A domain as virsh users write it (not through anyvirt)."""
    current = f"<currentMemory unit='KiB'>{current_kib}</currentMemory>" if current_kib else ""
    return f"""<domain type='qemu'>
      <name>{name}</name>
      <memory unit='KiB'>{memory_kib}</memory>{current}
      <vcpu>1</vcpu>
      <os><type arch='x86_64'>hvm</type>{os_extra}</os><features><acpi/></features>
      <devices>{disks}{extra_devices}</devices>
    </domain>"""


@pytest.fixture
def defined(host: Host) -> Iterator[Callable[[str], VM]]:
    """``defined(xml)`` defines a domain natively and returns anyvirt's handle; every
    domain left at the end is undefined (its volumes are the test's to check)."""
    made: list[str] = []

    def define(xml: str) -> VM:
        dom = host.native.defineXML(xml)
        made.append(dom.UUIDString())
        return host.vms.get(dom.UUIDString())

    yield define
    for vm_id in made:
        try:
            dom = host.native.lookupByUUIDString(vm_id)
        except libvirt.libvirtError:
            continue
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


def test_volume_disks_are_copied_by_a_full_clone_and_deleted_with_their_vm(
    host: Host, defined: Callable[[str], VM], vms: Callable[[VM], VM], tmp_path: Path
) -> None:
    vol_name = unique_name("voldisk") + ".qcow2"
    _pool(host).createXML(
        f"<volume><name>{vol_name}</name><capacity unit='bytes'>{4 * MIB}</capacity>"
        "<target><format type='qcow2'/></target></volume>", 0)
    vm = defined(_domain_xml(unique_name("vol"), f"""<disk type='volume' device='disk'>
        <driver name='qemu' type='qcow2'/><source pool='default' volume='{vol_name}'/>
        <target dev='vda' bus='virtio'/></disk>"""))
    disk = vm.info().disks[0]
    assert disk.path == str(_pool_dir(host) / vol_name)
    assert (disk.size_bytes, disk.storage) == (4 * MIB, "default")

    clone = vms(vm.clone(unique_name("vol-clone")))
    source = ET.fromstring(clone.native.XMLDesc(0)).find("devices/disk/source")
    assert source is not None and source.get("pool") == "default"
    assert source.get("volume") not in (None, vol_name), "the clone has its own volume"
    clone_volume = str(source.get("volume"))
    assert {vol_name, clone_volume} <= _volumes(host)

    assert vm.backup(tmp_path / "vol.avbk").stat().st_size > 0, "backup reads the volume"
    vm.delete(disks=True)
    clone.delete(disks=True)
    assert not {vol_name, clone_volume} & _volumes(host), "both volumes removed, none orphaned"


def test_each_clone_gets_its_own_nvram_and_deleting_one_keeps_the_original(
    host: Host, defined: Callable[[str], VM], vms: Callable[[VM], VM], tmp_path: Path
) -> None:
    nvram = _pool_dir(host) / f"{unique_name('vars')}.fd"
    nvram.write_bytes(b"EFI-VARS" * 512)
    disk = _pool_dir(host) / f"{unique_name('efi')}.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", str(disk), "1M")
    vm = defined(_domain_xml(
        unique_name("efi"),
        f"""<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>""",
        os_extra=f"<loader readonly='yes' type='pflash'>{tmp_path}/CODE.fd</loader>"
                 f"<nvram>{nvram}</nvram>"))
    clone = vms(vm.clone(unique_name("efi-clone")))
    clone_nvram = ET.fromstring(clone.native.XMLDesc(0)).find("os/nvram")
    assert clone_nvram is not None
    assert (clone_nvram.text or "").strip() != str(nvram), "not the original's file"
    assert clone_nvram.get("template") == str(nvram), "libvirt copies the original's vars"

    clone.delete(disks=False)
    assert nvram.read_bytes() == b"EFI-VARS" * 512, "the original's NVRAM survives"
    never_started = vms(vm.clone(unique_name("efi-clone")))
    vm.delete(disks=True)
    assert not disk.exists(), "its own disk goes with it"
    assert nvram.exists(), "but not the vars a clone's first start still copies"
    never_started.delete(disks=True)


@pytest.mark.parametrize("name", [".", "..", "a/b", "../victim"])
def test_names_libvirt_maps_onto_paths_are_refused_before_anything_is_sent(
    host: Host, guest: Callable[[str], VM], spec_for: Callable[[str], VMSpec], name: str
) -> None:
    victim = guest("victim")
    victim.snapshots.create("keep")
    before = sorted(d.UUIDString() for d in host.native.listAllDomains(0))
    volumes = _volumes(host)
    # "." and ".." the core refuses for every backend; "/" is libvirt's own rule
    with pytest.raises(InvalidSpec, match=r"must not be '\.' or '\.\.'|must not contain '/'"):
        host.vms.create(spec_for(name))
    with pytest.raises(InvalidSpec, match=r"must not be '\.' or '\.\.'|contain '/'"):
        victim.clone(name)
    assert sorted(d.UUIDString() for d in host.native.listAllDomains(0)) == before
    assert _volumes(host) == volumes
    assert [s.name for s in victim.snapshots.list()] == ["keep"]


def test_facts_of_disks_memory_and_nics_agree_with_virsh(
    host: Host, defined: Callable[[str], VM], tmp_path: Path
) -> None:
    pool_dir = _pool_dir(host)
    unseen = pool_dir / f"{unique_name('unseen')}.qcow2"  # in the pool's directory, not refreshed
    base = pool_dir / f"{unique_name('base')}.qcow2"
    overlay = pool_dir / f"{unique_name('overlay')}.qcow2"  # as an external snapshot leaves it
    outside = tmp_path / "outside.raw"  # in no pool at all
    _qemu_img("create", "-q", "-f", "qcow2", str(unseen), "3M")
    _qemu_img("create", "-q", "-f", "qcow2", str(base), "5M")
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay))
    _qemu_img("create", "-q", "-f", "raw", str(outside), "2M")
    disks = "".join(
        f"""<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>
        <source file='{path}'/><target dev='{dev}' bus='virtio'/></disk>"""
        for dev, path, fmt in (("vda", unseen, "qcow2"), ("vdb", overlay, "qcow2"),
                               ("vdc", outside, "raw"))
    )
    nics = """<interface type='direct'><source dev='eth0' mode='bridge'/></interface>
              <interface type='ethernet'/>
              <interface type='ethernet'><target dev='tap-anyvirt' managed='no'/></interface>"""
    vm = defined(_domain_xml(unique_name("facts"), disks, nics, memory_kib=1024 * 1024,
                             current_kib=512 * 1024))
    info = vm.info()
    dom = vm.native
    by_dev = {d.id: d for d in info.disks}
    for dev in ("vda", "vdb", "vdc"):
        assert by_dev[dev].size_bytes == dom.blockInfo(by_dev[dev].path, 0)[0], dev
    assert [by_dev[d].size_bytes for d in ("vda", "vdb", "vdc")] == [3 * MIB, 5 * MIB, 2 * MIB]
    assert (by_dev["vda"].storage, by_dev["vdc"].storage) == ("default", None)
    assert by_dev["vdb"].backing == str(base)
    # memory_mib is the current size everywhere; the maximum is the room to grow live
    listed = next(v for v in host.vms.list() if v.id == vm.id)
    assert listed.memory_mib == info.memory_mib == info.spec.memory_mib == vm.memory_mib == 512
    assert info.extra["memory_max_mib"] == 1024
    assert [n.network for n in info.nics] == ["direct:eth0", "ethernet", "ethernet:tap-anyvirt"]

    vm.delete(disks=True)
    assert not unseen.exists() and not overlay.exists() and not base.exists(), (
        "pool files are the VM's, seen by the pool or not")
    assert outside.exists(), "a file outside every pool is never deleted"


def test_a_disk_outside_the_pools_is_backed_up_not_reported_missing(
    host: Host, defined: Callable[[str], VM], tmp_path: Path, guest_image: Path
) -> None:
    outside = tmp_path / "outside.raw"
    outside.write_bytes(guest_image.read_bytes())
    vm = defined(_domain_xml(unique_name("outside"), f"""<disk type='file' device='disk'>
        <driver name='qemu' type='raw'/><source file='{outside}'/>
        <target dev='vda' bus='virtio'/></disk>"""))
    archive = vm.backup(tmp_path / "outside.avbk")
    assert archive.stat().st_size > 0
    with pytest.raises(InvalidSpec, match="outside every storage pool"):
        vm.clone(unique_name("outside-clone"))


def test_a_transient_domain_is_listed_as_such_and_powers_off(
    host: Host, guest_image: Path, tmp_path: Path
) -> None:
    disk = tmp_path / "transient.raw"
    disk.write_bytes(guest_image.read_bytes())
    transient_xml = _domain_xml(unique_name("transient"), f"""<disk type='file'
        device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/>
        <target dev='vda' bus='virtio'/></disk>""")
    dom = host.native.createXML(transient_xml, 0)
    vm = host.vms.get(dom.UUIDString())
    assert vm.state is PowerState.RUNNING and vm.raw_state == "running (booted)"
    assert vm.info().extra["transient"] is True
    vm.pause()
    assert vm.raw_state == "paused (user)", "libvirt's reason is kept"
    vm.stop(force=True)  # libvirt forgets a transient domain once it is off
    assert vm.state is PowerState.STOPPED
    assert not host.vms.exists(vm.id)
    again = host.vms.get(host.native.createXML(transient_xml, 0).UUIDString())
    again.stop(timeout=60)  # the ACPI way too: the guest powers off, libvirt forgets it
    assert again.state is PowerState.STOPPED and not host.vms.exists(again.id)


def test_errors_are_of_the_right_kind(host: Host, guest: Callable[[str], VM]) -> None:
    assert host.vms.exists(str(uuid.uuid4())) is False
    vm = guest("dup")
    spec = vm.info().spec
    # a define racing another client's: the gate saw the name free, libvirt did not
    with pytest.raises(AlreadyExists):
        host.driver.create_vm(spec, Job("race", 60))
    assert len([v for v in host.vms.list() if v.name == vm.name]) == 1


def test_live_reconfigure_really_happens_within_the_room_a_new_vm_gets(
    host: Host, guest: Callable[[str], VM]
) -> None:
    vm = guest("live")
    host_cpus = host.info().cpus
    root = ET.fromstring(vm.native.XMLDesc(0))
    vcpu = root.find("vcpu")
    assert vcpu is not None and vcpu.get("current") == "1" and vcpu.text == str(max(1, host_cpus))
    # no memory room above what it was given (a balloon-less guest would take it all)
    assert root.findtext("memory") == root.findtext("currentMemory")
    vm.start()
    dom = vm.native
    if host_cpus > 1:
        assert vm.reconfigure(cpus=2) is True
        assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2, "hot-plugged, live"
        assert vm.cpus == 2
    room = vm.info().extra["memory_max_mib"]
    assert vm.reconfigure(memory_mib=room - 8) is True, "the balloon takes it back live"
    assert dom.info()[2] // 1024 in (room - 8, room), "libvirt set the balloon target"
    assert vm.reconfigure(memory_mib=room) is True
    with pytest.raises(InvalidState, match="room"):
        vm.reconfigure(memory_mib=room + 16)
    cpus_before = dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    with pytest.raises(InvalidState, match="room"):
        vm.reconfigure(cpus=host_cpus + 1)
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == cpus_before, "nothing changed"
    vm.stop(force=True)


def test_media_and_network_disks_are_shared_or_refused_never_copied_or_deleted(
    host: Host, defined: Callable[[str], VM], vms: Callable[[VM], VM]
) -> None:
    pool_dir = _pool_dir(host)
    disk, iso, floppy = (pool_dir / f"{unique_name(kind)}.{ext}" for kind, ext in
                         (("media-disk", "qcow2"), ("media", "iso"), ("floppy", "img")))
    _qemu_img("create", "-q", "-f", "qcow2", str(disk), "1M")
    iso.write_bytes(b"CD001" * 1000)
    floppy.write_bytes(b"\0" * 1474560)
    media = f"""<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
        <source file='{iso}'/><target dev='hdc' bus='ide'/><readonly/></disk>
      <disk type='file' device='floppy'><driver name='qemu' type='raw'/>
        <source file='{floppy}'/><target dev='fda' bus='fdc'/></disk>"""
    vm = defined(_domain_xml(unique_name("media"), media))
    clone = vms(vm.clone(unique_name("media-clone")))
    clone_sources = [s.get("file") for s in
                     ET.fromstring(clone.native.XMLDesc(0)).iterfind("devices/disk/source")]
    assert clone_sources[1:] == [str(iso), str(floppy)], "removable media are shared, not copied"
    assert clone_sources[0] != str(disk)
    clone.delete(disks=True)
    vm.delete(disks=True)
    assert iso.exists() and floppy.exists(), "media are never a VM's own disks"
    assert not disk.exists()

    network = defined(_domain_xml(unique_name("nbd"), """<disk type='network' device='disk'>
        <driver name='qemu' type='raw'/><source protocol='nbd' name='export'>
        <host name='127.0.0.1' port='10809'/></source><target dev='vda' bus='virtio'/></disk>"""))
    volumes = _volumes(host)
    with pytest.raises(InvalidSpec, match="network disk"):
        network.clone(unique_name("nbd-clone"))
    with pytest.raises(InvalidSpec, match="network disk"):
        network.backup(pool_dir / "never.avbk")
    assert _volumes(host) == volumes and not (pool_dir / "never.avbk").exists()
    network.delete(disks=True)
    assert not host.vms.exists(network.id)

    lun = defined(_domain_xml(unique_name("lun"), """<disk type='block' device='lun'>
        <driver name='qemu' type='raw'/><source dev='/dev/sdz'/>
        <target dev='sda' bus='scsi'/></disk>"""))
    with pytest.raises(InvalidSpec, match="LUN"):
        lun.clone(unique_name("lun-clone"))
    assert _volumes(host) == volumes


def test_a_hand_made_linked_clone_keeps_its_original_s_disk(
    host: Host, defined: Callable[[str], VM]
) -> None:
    pool_dir = _pool_dir(host)
    base, overlay = pool_dir / f"{unique_name('hand-base')}.qcow2", pool_dir / f"{unique_name('hand')}.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", str(base), "2M")
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay))

    def disk(path: Path) -> str:
        return f"""<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
            <source file='{path}'/><target dev='vda' bus='virtio'/></disk>"""

    original = defined(_domain_xml(unique_name("hand-orig"), disk(base)))
    clone = defined(_domain_xml(unique_name("hand-clone"), disk(overlay)))
    with pytest.raises(InvalidState, match=clone.name):
        original.delete(disks=True)  # the clone reads that disk
    assert base.exists() and host.vms.exists(original.id)
    clone.delete(disks=True)
    assert not overlay.exists() and base.exists(), "the original's disk is not the clone's"
    original.delete(disks=True)
    assert not base.exists()
