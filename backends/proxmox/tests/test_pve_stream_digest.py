"""A streamed move from Proxmox is verified from a digest taken on the way out: the node's
bytes cross the wire once, for the copy, and the verification reads nothing of the node.

The node's side is the **stand-in** of ``test_pve_disk_ssh`` (a real OpenSSH server on
loopback serving a directory a fakepve storage names as its path); the target is
memory://, which has no ranged reads, so its copy is read back whole and compared with
the digest the source's served view took as the import read it. The node's bytes are
counted where this process opens its ranged reads on the node (each window is one
``dd`` over SSH, or one SFTP read run).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import anyvirt_vsphere.testbed.fixtures as vcsim_fixtures
import pytest
from anyvirt_proxmox import node_disks, node_streams
from anyvirt_vsphere.testbed.vcsim import Vcsim
from fakepve import FakePve
from test_pve_disk_ssh import (
    BRIDGES,
    DISK_GIB,
    MIB,
    memory_disk,
    memory_host,
    node_path,
    sha256_of,
    write_disk,
)
from test_pve_disk_ssh import make as make
from test_pve_disk_ssh import node as node
from test_pve_disk_ssh import nodestore as nodestore
from test_pve_disk_ssh import ssh_host as ssh_host
from test_pve_disk_ssh import temp_dir as temp_dir

import anyvirt
from anyvirt.host import Host
from anyvirt.kit import mapped_sources
from anyvirt.kit.windowed_reads import Window
from anyvirt.migration import range_check
from anyvirt.testing.disk_bytes import flip_memory_disk_byte, pattern
from anyvirt.vm import VM

pytestmark = pytest.mark.skipif(
    shutil.which("/usr/sbin/sshd") is None or os.geteuid() != 0,
    reason="needs Debian's openssh-server (scripts/system-packages.sh test) and root for its "
           "private mount namespace")

vcsim_vcenter = vcsim_fixtures.vcsim_vcenter

#: what a move reads from the node: one raw volume, one qcow2 volume, a linked clone's
#: qcow2 on its base's (the kinds PVE keeps on directory storage)
KINDS = ["raw", "qcow2", "linked"]

#: 64 MiB disk: 3 MiB of data at 0, 1 MiB at 40 MiB; 4 MiB allocated
DATA = [(0, pattern(11, 3 * MIB)), (40 * MIB, pattern(12, MIB))]
ALLOCATED = sum(len(chunk) for _, chunk in DATA)


class NodeReads:
    """The bytes this process asks of the node, by phase of the move: ``copy`` until the
    move says it verifies, ``verify`` after."""

    def __init__(self) -> None:
        self.phase = "copy"
        self.bytes = {"copy": 0, "verify": 0}

    def counted(self, window: Callable[..., Window]) -> Callable[..., Window]:
        def opened(reach: object, path: str, offset: int, length: int, what: str) -> Window:
            self.bytes[self.phase] += length
            return window(reach, path, offset, length, what)
        return opened

    def watch(self, task: anyvirt.Task) -> None:
        if "verifying" in (task.message or ""):
            self.phase = "verify"


@contextlib.contextmanager
def source_vm(kind: str, ssh_host: Host, pve: FakePve, make: Callable[..., VM], tmp_path: Path,
              name: str) -> Iterator[tuple[VM, bytes]]:
    """A stopped VM whose one disk is ``kind`` on the node, and its guest's bytes. A linked
    clone's own layer holds new data in a hole of its base (at 20 MiB) and over its base's
    data (at 1 MiB: the base's bytes there must not show)."""
    pve.storages["nodestore"]["format"] = "raw" if kind == "raw" else "qcow2"
    if kind != "linked":
        vm = make(name)
        yield vm, write_disk(ssh_host, vm, kind, DATA, tmp_path)
        return
    base = make(f"{name}-base")
    base.mark_template()
    guest = bytearray(write_disk(ssh_host, base, "qcow2", DATA, tmp_path))
    clone = base.clone(name, linked=True)
    try:
        top = node_path(ssh_host, clone.info().disks[0].path)
        top.parent.mkdir(parents=True, exist_ok=True)
        size = str(int(DISK_GIB * 1024 * MIB))
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(node_path(ssh_host, base.info().disks[0].path)), str(top), size],
                       check=True)
        for offset, byte in ((20 * MIB, 0xab), (MIB, 0x5c)):
            subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                            f"write -P {byte} {offset} {MIB // 2}", str(top)],
                           check=True, capture_output=True)
            guest[offset:offset + MIB // 2] = bytes([byte]) * (MIB // 2)
        yield clone, bytes(guest)
    finally:
        with contextlib.suppress(anyvirt.AnyvirtError):
            clone.delete()


@pytest.fixture
def node_reads(monkeypatch: pytest.MonkeyPatch) -> NodeReads:
    reads = NodeReads()
    for reach in (node_streams._OverOpenSsh, node_streams._OverSftp):
        monkeypatch.setattr(reach, "window", reads.counted(reach.window))
    return reads


@pytest.mark.usefixtures("linked_volume_standin")
@pytest.mark.parametrize(("kind", "transport"), [
    ("raw", "openssh"), ("raw", "sftp"), ("qcow2", "openssh"), ("qcow2", "sftp"),
    ("linked", "openssh")])
def test_the_verification_reads_nothing_from_the_node(
        ssh_host: Host, pve: FakePve, make: Callable[..., VM], tmp_path: Path, temp_dir: Path,
        node_reads: NodeReads, kind: str, transport: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if transport == "sftp":  # no map of the holes there: the copy reads every byte
        monkeypatch.setattr(node_disks, "openssh_wanted", lambda: False)
    with source_vm(kind, ssh_host, pve, make, tmp_path, f"digest-{kind}-{transport}") as (vm, guest), \
            memory_host() as target:
        result = anyvirt.migrate(vm, to=target, networks=BRIDGES, on_progress=node_reads.watch)
        assert memory_disk(target.vms.get(vm.name), tmp_path) == guest
    assert node_reads.phase == "verify"
    assert node_reads.bytes["copy"] >= ALLOCATED, "the copy read the disk from the node"
    assert node_reads.bytes["verify"] == 0, (
        f"the verification read {node_reads.bytes['verify']} bytes from the node again")
    assert [d.method for d in result.disks] == [range_check.METHOD]
    assert [d.source_sha256 == d.target_sha256 is not None for d in result.disks] == [True]
    assert list(temp_dir.iterdir()) == []


@pytest.mark.usefixtures("linked_volume_standin")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", [40 * MIB + 5, 30 * MIB], ids=["in-data", "in-a-hole"])
def test_a_copy_that_differs_fails_the_move_and_leaves_nothing(
        ssh_host: Host, pve: FakePve, make: Callable[..., VM], tmp_path: Path,
        temp_dir: Path, where: int, kind: str) -> None:
    """One byte of the target's disk changed after the import (before the verification), in
    the source's data or where the source reads as zeros: the move fails naming the
    difference, the copy is removed, the source is as it was."""
    stack = contextlib.ExitStack()
    vm, _guest = stack.enter_context(
        source_vm(kind, ssh_host, pve, make, tmp_path, f"digest-differs-{kind}-{where}"))
    source = node_path(ssh_host, vm.info().disks[0].path)
    before = sha256_of(source)
    flipped: list[str] = []

    with stack, memory_host() as target:
        def flip_a_byte(task: anyvirt.Task) -> None:
            if flipped or "verifying" not in (task.message or ""):
                return
            flipped.append(flip_memory_disk_byte(target, vm.name, where))

        with pytest.raises(anyvirt.TaskFailed, match="differs"):
            anyvirt.migrate(vm, to=target, networks=BRIDGES, on_progress=flip_a_byte)
        assert flipped, "the copy was never changed"
        assert not target.vms.exists(vm.name)
        assert target.vms.list() == []
        assert sha256_of(source) == before
        assert ssh_host.vms.get(vm.id).state is anyvirt.PowerState.STOPPED
    assert list(temp_dir.iterdir()) == []


@pytest.mark.usefixtures("linked_volume_standin")
@pytest.mark.parametrize("kind", ["qcow2", "linked"])
def test_a_chain_moved_to_vsphere_is_read_where_its_data_sits(
        ssh_host: Host, pve: FakePve, make: Callable[..., VM], tmp_path: Path, temp_dir: Path,
        node_reads: NodeReads, vcsim_vcenter: Vcsim, kind: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """vSphere's encoder reads the chain's data from its layers where their maps place it
    (the mapped source the served view registers), feeds the digest itself, and the
    verification reads the target's data ranges only: nothing from the node."""
    mapped: list[bool] = []
    source_for = mapped_sources.source_for

    def seen(path: str | os.PathLike[str]) -> mapped_sources.MappedSource | None:
        found = source_for(path)
        mapped.append(found is not None)
        return found

    monkeypatch.setattr(mapped_sources, "source_for", seen)
    with source_vm(kind, ssh_host, pve, make, tmp_path, f"digest-vc-{kind}") as (vm, guest), \
            anyvirt.connect(vcsim_vcenter.anyvirt_uri_with_ca,
                            password=vcsim_vcenter.password) as vc:
        result = anyvirt.migrate(vm, to=vc, networks={"vmbr0": "VM Network"},
                                 on_progress=node_reads.watch)
        moved = vc.vms.get(result.vm_id)
        try:
            path = moved.info().disks[0].path
            assert path is not None and vcsim_vcenter.datastore_dir is not None
            relative = path.split("] ", 1)[1].removesuffix(".vmdk") + "-flat.vmdk"
            (flat,) = vcsim_vcenter.datastore_dir.rglob(relative)
            assert sha256_of(flat) == hashlib.sha256(guest).hexdigest()
        finally:
            moved.delete(disks=True)
    assert mapped == [True], "the encoder read the chain through its decoder"
    assert node_reads.phase == "verify"
    assert node_reads.bytes["verify"] == 0, (
        f"the verification read {node_reads.bytes['verify']} bytes from the node again")
    assert [d.method for d in result.disks] == [range_check.METHOD]
    assert list(temp_dir.iterdir()) == []


def test_a_qcow2_naming_a_data_file_here_is_refused_before_anything_reads_it(
        ssh_host: Host, pve: FakePve, make: Callable[..., VM], tmp_path: Path,
        temp_dir: Path) -> None:
    """A volume's qcow2 header may name an external data file; QEMU, serving the streamed
    layer on this machine, would open that name here. The move refuses the layer before
    anything opens it: nothing is made on the target, and the named file is never read."""
    pve.storages["nodestore"]["format"] = "qcow2"
    vm = make("datafile")
    write_disk(ssh_host, vm, "qcow2", DATA, tmp_path)
    where = node_path(ssh_host, vm.info().disks[0].path)
    secret = tmp_path / "secret.bin"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={secret},data_file_raw=on", str(where),
                    str(int(DISK_GIB * 1024 * MIB))], check=True)
    with secret.open("r+b") as data:
        data.write(pattern(7, MIB))
    with memory_host() as target:
        with pytest.raises(anyvirt.InvalidSpec, match="external data file"):
            anyvirt.migrate(vm, to=target, networks=BRIDGES)
        assert target.vms.list() == []
    assert list(temp_dir.iterdir()) == []
    assert ssh_host.vms.get(vm.id).state is anyvirt.PowerState.STOPPED
