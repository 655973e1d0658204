"""Which VirtualBox disks a move reads where they are (``disks_in_place``), on the real
VirtualBox 7.2, and the rules behind it as pure logic on real images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
from anyvirt_virtualbox import in_place, listings, vdi_chain
from anyvirt_virtualbox.testbed import Home

from anyvirt.errors import TaskFailed
from anyvirt.host import Host
from anyvirt.model import MIB, DiskSpec, VMSpec
from anyvirt.tasks import Job


def _job() -> Job:
    return Job("in place", 60)


def _attach(home: Home, vm_id: str, image: Path, fmt: str, port: int) -> None:
    home.run("createmedium", "disk", "--filename", str(image), "--size", "4", "--format", fmt)
    home.run("storageattach", vm_id, "--storagectl", "SATA", "--port", str(port), "--device", "0",
             "--type", "hdd", "--medium", str(image))


def _vm(host: Host, name: str) -> str:
    return host.vms.create(VMSpec(name=name, cpus=1, memory_mib=32,
                                  disks=[DiskSpec(size_gib=0.0078125)])).id  # 8 MiB


def test_base_vdi_and_vmdk_are_read_in_place(real_home: Home, real_host: Host, tmp_path: Path) -> None:
    vm_id = _vm(real_host, "plain")
    vmdk = real_home.machine_folder / "plain" / "extra.vmdk"
    _attach(real_home, vm_id, vmdk, "VMDK", 1)
    found = real_host.driver.disks_in_place(vm_id, _job())
    assert found is not None
    assert [(d.format, d.size_bytes) for d in found] == [("vdi", 8 * MIB), ("vmdk", 4 * MIB)]
    assert found[1].path == str(vmdk)


def test_a_vhd_a_snapshot_or_a_linked_clone_keeps_clonemedium(real_home: Home, real_host: Host,
                                                              tmp_path: Path) -> None:
    """qemu sizes VirtualBox's VHDs by their CHS geometry (smaller than the disk); a
    snapshot or a linked clone makes a differencing VDI, which qemu-img refuses."""
    with_vhd = _vm(real_host, "vhd")
    _attach(real_home, with_vhd, real_home.machine_folder / "vhd" / "extra.vhd", "VHD", 1)
    assert real_host.driver.disks_in_place(with_vhd, _job()) is None

    snapped = real_host.vms.get(_vm(real_host, "snapped"))
    snapped.snapshots.create("s")
    assert real_host.driver.disks_in_place(snapped.id, _job()) is None

    base = real_host.vms.get(_vm(real_host, "base"))
    clone = base.clone("linked", linked=True)
    assert real_host.driver.disks_in_place(clone.id, _job()) is None
    exported = real_host.driver.export_disks(clone.id, tmp_path, _job())  # the fallback
    assert [d.format for d in exported] == ["vdi"] and Path(exported[0].path).is_file()


# ----------------------------------------------------------------- the rules, pure logic


@pytest.fixture
def vdi(tmp_path: Path) -> tuple[Path, str]:
    """A real VDI (qemu-img made) and the UUID in its header."""
    path = tmp_path / "disk.vdi"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vdi", str(path), "4M"], check=True)
    found = in_place.image_uuid(str(path), "vdi")
    assert found is not None
    return path, found


def _medium(path: Path, uuid: str) -> listings.Medium:
    """``list hdds``'s record of a standalone VDI."""
    return listings.Medium(uuid=uuid, location=str(path), format="VDI", capacity_mib=4, parent=None,
                           state="created", kind="normal (base)", encryption="disabled")


def test_a_standalone_image_with_virtualbox_s_uuid_is_read(vdi: tuple[Path, str]) -> None:
    path, uuid = vdi
    assert in_place.readable_here(_medium(path, uuid), _job()) == ("vdi", 4 * MIB)


@pytest.mark.parametrize("changes", [
    {"uuid": "0f6b2867-6120-43c4-93ec-c21a29ef187d"},  # another file at that path (a chroot)
    {"location": "/nonexistent/disk.vdi"},  # not visible here at all
    {"encryption": "AES-XTS256-PLAIN64"},  # qemu would read ciphertext
    {"kind": "shareable"},  # another VM may write it
    {"kind": "normal (differencing)", "parent": "a59335c2-440a-48fd-b72e-06c8f633132a"},
    {"format": "VHD"},  # qemu's size differs from VirtualBox's
    {"format": "VMDK"},  # VirtualBox's record says VMDK: never probed into a VDI
    {"state": "inaccessible"},
], ids=["other-file", "not-here", "encrypted", "shareable", "differencing", "vhd", "format-lie",
        "inaccessible"])
def test_anything_else_is_not_read_in_place(vdi: tuple[Path, str], changes: dict[str, Any]) -> None:
    path, uuid = vdi
    medium = attrs.evolve(_medium(path, uuid), **changes)
    assert in_place.readable_here(medium, _job()) is None


# ----------------------------------------------------------------- chains, streamed


def test_a_linked_clone_streams_as_virtualbox_flattens_it(real_home: Home, real_host: Host,
                                                          tmp_path: Path) -> None:
    """A linked clone of a VM with writes after its snapshot: the clone's chain (its own
    differencing VDI, the source's snapshot, the base) read through the stream is what
    VirtualBox's own ``clonemedium --format RAW`` gives, byte for byte."""
    image = tmp_path / "base.raw"
    with open(image, "wb") as handle:
        handle.write(os.urandom(3 * MIB))
        handle.truncate(8 * MIB)
    base = real_host.vms.create(VMSpec(name="origin", cpus=1, memory_mib=32,
                                       disks=[DiskSpec(image=str(image))]))
    clone = base.clone("linked", linked=True)
    (top,) = [d.path or "" for d in clone.info().disks]
    truth = tmp_path / "truth.raw"
    real_home.run("clonemedium", "disk", top, str(truth), "--format", "RAW")
    real_home.run("closemedium", "disk", str(truth))
    with real_host.driver.stream_disks(clone.id, _job()) as disks:
        assert disks is not None and [d.format for d in disks] == ["raw"]
        assert Path(disks[0].path).read_bytes() == truth.read_bytes()
        with open(disks[0].path, "rb") as view:  # the chain's zeros are holes in the view
            assert os.lseek(view.fileno(), 0, os.SEEK_HOLE) == 3 * MIB


def _chain_media(home: Home) -> dict[str, listings.Medium]:
    return {m.uuid: m for m in listings.media(home.run("list", "hdds").stdout)}


def test_a_chain_is_read_only_when_every_file_is_virtualbox_s(real_home: Home, real_host: Host,
                                                              tmp_path: Path) -> None:
    vm = real_host.vms.get(_vm(real_host, "chained"))
    vm.snapshots.create("s")
    by_uuid = _chain_media(real_home)
    (top,) = [m for m in by_uuid.values() if m.parent is not None]
    chain = vdi_chain.media_chain(top, by_uuid)
    assert chain is not None and len(chain) == 2
    assert vdi_chain.matching_layers(chain) is not None
    other = attrs.evolve(chain[1], uuid="0f6b2867-6120-43c4-93ec-c21a29ef187d")
    assert vdi_chain.matching_layers([chain[0], other]) is None, "not the base it links to"
    assert vdi_chain.matching_layers([chain[0]]) is None, "a differencing image as a base"
    assert vdi_chain.matching_layers([chain[1], chain[0]]) is None, "upside down"
    assert vdi_chain.media_chain(attrs.evolve(top, encryption="AES-XTS256-PLAIN64"), by_uuid) is None
    assert vdi_chain.media_chain(top, {top.uuid: top}) is None, "a parent VirtualBox does not list"
    assert vdi_chain.media_chain(attrs.evolve(chain[1], format="VMDK"), by_uuid) is None


def test_a_block_past_the_file_s_end_fails_the_read(tmp_path: Path) -> None:
    """A VDI whose map names a block its file no longer holds: the read fails, it never
    turns into zeros."""
    path = tmp_path / "cut.vdi"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vdi", str(path), "4M"], check=True)
    subprocess.run(["qemu-io", "-f", "vdi", "-c", "write -P 0x5a 0 2M", str(path)], check=True,
                   capture_output=True)
    layer = vdi_chain.read_layer(str(path))
    assert layer is not None and [layer.entry(b) for b in range(4)][:2] == [0, 1]
    with vdi_chain.opened([layer]) as reader:
        assert reader.read_at(MIB - 4, 8) == b"\x5a" * 8
        assert reader.status(MIB // 2, 4 * MIB) == [(MIB + MIB // 2, False), (2 * MIB, True)]
        assert reader.read_at(3 * MIB, 4) == bytes(4), "a free block of a base: zeros"
    os.truncate(path, layer.first_block + MIB)
    with vdi_chain.opened([layer]) as reader, pytest.raises(TaskFailed, match="past the file"):
        reader.read_at(MIB, 16)
