"""Disk bytes from the node over the opt-in SSH connection (``ssh=``): portable backups,
repository backups and moves to another platform, from Proxmox.

The API side is fakepve (every request schema-checked); the node's side is a
**stand-in**: a real OpenSSH server on loopback (``tests/sshd_support.py``, the
one the sftp:// repository tests use) and a directory standing for the node's
storage. A fakepve directory storage ``nodestore`` is configured with its
``path`` inside that directory, so the path PVE reports for a VM's volume
(``GET .../storage/nodestore/content/{volume}``) is a real file there; each test
writes the disk's bytes into it, as the guest would have on a real node, and
proves they come out byte for byte elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from anyvirt_proxmox import node_disks
from fakepve import FakePve
from pve_support import PASSWORD, InProcessFakePve, Traffic

import anyvirt
from anyvirt import BackupRepository, Capability, DiskSpec, NicSpec, VMSpec
from anyvirt.errors import ConnectionFailed, InvalidSpec, NotSupported
from anyvirt.host import Host
from anyvirt.kit import qemu_img
from anyvirt.tasks import Job
from anyvirt.testing.disk_bytes import pattern
from anyvirt.testing.staging import largest_file
from anyvirt.vm import VM

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from move_faults_support import temp_dir as temp_dir
from sshd_support import Sshd, sshd

pytestmark = pytest.mark.skipif(
    shutil.which("/usr/sbin/sshd") is None or os.geteuid() != 0,
    reason="needs Debian's openssh-server (scripts/system-packages.sh test) and root for its "
           "private mount namespace")

MIB = 1024 * 1024
DISK_GIB = 0.0625  # 64 MiB


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Sshd]:
    """The stand-in for the node's SSH: a real sshd on loopback."""
    with sshd(tmp_path / "ssh") as running:
        yield running


@pytest.fixture
def nodestore(pve: FakePve, node: Sshd) -> Iterator[Path]:
    """A directory storage of the fake cluster whose path is in the stand-in's directory."""
    root = node.served / "nodestore"
    root.mkdir()
    pve.storages["nodestore"] = {"type": "dir", "active": 1, "content": "images", "files": set(),
                                 "path": str(root), "avail": 50 * 1024 ** 3}
    yield root
    pve.storages.pop("nodestore", None)


def ssh_uri(fake: InProcessFakePve, node: Sshd) -> str:
    # an "@" in a URI's query is written %40 (the core's rule: a bare one may be a password's
    # character that ended the authority early)
    return (f"{fake.uri}&ssh=root%40127.0.0.1:{node.port}&ssh_key={quote(str(node.key))}"
            f"&ssh_known_hosts={quote(str(node.known_hosts))}")


@pytest.fixture
def ssh_host(fake: InProcessFakePve, node: Sshd, nodestore: Path,
             migration_standin: object) -> Iterator[Host]:
    with anyvirt.connect(ssh_uri(fake, node), password=PASSWORD) as host:
        yield host


@pytest.fixture
def make(ssh_host: Host, pve: FakePve) -> Iterator[Callable[..., VM]]:
    made: list[VM] = []

    def create(name: str) -> VM:
        vm = ssh_host.vms.create(VMSpec(name=name, cpus=1, memory_mib=128, node="pve1",
                                        disks=[DiskSpec(size_gib=DISK_GIB, storage="nodestore")],
                                        nics=[NicSpec()]))
        made.append(vm)
        return vm

    yield create
    for vm in made:
        try:
            vm.delete()
        except anyvirt.AnyvirtError:
            continue


def write_disk(host: Host, vm: VM, fmt: str, data: list[tuple[int, bytes]], scratch: Path) -> bytes:
    """Put the guest's bytes where PVE says the volume lives (in the stand-in's directory), as
    ``fmt``; returns the whole disk as the guest sees it."""
    disk = vm.info().disks[0]
    assert disk.path is not None and disk.size_bytes == int(DISK_GIB * 1024 * MIB)
    located = host.native.nodes("pve1").storage("nodestore").content(quote(disk.path, safe="")).get()
    where = Path(located["path"])
    assert where.is_relative_to(host_storage_root(host)), where
    raw = scratch / f"guest-{uuid.uuid4().hex}.raw"
    whole = bytearray(disk.size_bytes)
    with raw.open("wb") as out:
        out.truncate(disk.size_bytes)
        for offset, chunk in data:
            out.seek(offset)
            out.write(chunk)
            whole[offset:offset + len(chunk)] = chunk
    where.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "raw":
        shutil.copyfile(raw, where)
    else:
        qemu_img.convert(raw, where, source_format="raw", format=fmt)
    return bytes(whole)


def host_storage_root(host: Host) -> Path:
    return Path(host.native.storage("nodestore").get()["path"])


def memory_disk(vm: VM, scratch: Path) -> bytes:
    """A memory VM's disk as the guest sees it."""
    info = vm.info().disks[0]
    fmt, data = vm.native.contents[info.id]
    if fmt != "raw":
        packed, raw = scratch / f"m-{uuid.uuid4().hex}.{fmt}", scratch / f"m-{uuid.uuid4().hex}.raw"
        packed.write_bytes(data)
        qemu_img.convert(packed, raw, source_format=fmt, format="raw")
        data = raw.read_bytes()
    return data + bytes((info.size_bytes or 0) - len(data))


def memory_host() -> Host:
    return anyvirt.connect(f"memory://pve-target-{uuid.uuid4().hex[:8]}")


DATA = [(0, pattern(1, 3 * MIB)), (40 * MIB, pattern(2, MIB))]
BRIDGES = {"vmbr0": "default"}  # the PVE bridge onto the memory host's network


def test_without_ssh_disk_export_is_not_declared_and_says_how(pve_host: Host, tmp_path: Path) -> None:
    assert Capability.DISK_EXPORT not in pve_host.capabilities
    vm = pve_host.vms.create(VMSpec(name="nossh", cpus=1, memory_mib=64, node="pve1",
                                    disks=[DiskSpec(size_gib=DISK_GIB)]))
    try:
        with pytest.raises(NotSupported, match=r"ssh=user@node"):
            vm.backup(tmp_path / "x.avbk")
        assert not (tmp_path / "x.avbk").exists()
    finally:
        vm.delete()


def test_ssh_declares_disk_export(ssh_host: Host) -> None:
    assert Capability.DISK_EXPORT in ssh_host.capabilities
    assert Capability.SNAPSHOT_DISK_EXPORT not in ssh_host.capabilities


@pytest.mark.parametrize("transport", ["openssh", "sftp"])
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_portable_backup_reads_the_disk_from_the_node(ssh_host: Host, pve: FakePve, make: Callable[..., VM],
                                                      tmp_path: Path, fmt: str, transport: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if transport == "sftp":  # the path taken where this machine has no OpenSSH client
        monkeypatch.setattr(node_disks, "openssh_wanted", lambda: False)
    pve.storages["nodestore"]["format"] = fmt
    vm = make(f"portable-{fmt}")
    assert vm.info().disks[0].format == fmt
    guest = write_disk(ssh_host, vm, fmt, DATA, tmp_path)
    vm.backup(tmp_path / "vm.avbk")
    with memory_host() as target:
        copy = target.restore(tmp_path / "vm.avbk", name="copy", networks=BRIDGES)
        assert memory_disk(copy, tmp_path) == guest
        assert (copy.info().cpus, copy.info().memory_mib) == (1, 128)


def chunks_touched(ranges: list[tuple[int, bytes]], chunk: int) -> int:
    """The bytes of the repository's chunks that hold any of ``ranges``' data."""
    touched = {n for start, data in ranges
               for n in range(start // chunk, (start + len(data) - 1) // chunk + 1)}
    return len(touched) * chunk


def test_repository_backup_and_restore_on_another_platform(ssh_host: Host, make: Callable[..., VM],
                                                           tmp_path: Path) -> None:
    vm = make("repo-source")
    guest = write_disk(ssh_host, vm, "raw", DATA, tmp_path)
    with BackupRepository(str(tmp_path / "repo")) as repo:
        first = repo.backup(vm)
        assert (first.vm_id, first.vm_name) == (vm.id, "repo-source")
        # the chunks holding data; holes are not read
        assert first.read_bytes == chunks_touched(DATA, repo.chunk_size)
        assert 0 < first.stored_bytes < 4 * MIB
        more = [*DATA, (20 * MIB, pattern(3, MIB))]
        guest = write_disk(ssh_host, vm, "raw", more, tmp_path)
        second = repo.backup(vm)
        assert second.read_bytes == chunks_touched(more, repo.chunk_size)
        assert 0 < second.stored_bytes < first.stored_bytes  # only the new chunk
        assert repo.verify().ok
        with memory_host() as target:
            copy = repo.restore(second, to=target, name="from-pve", networks=BRIDGES)
            assert memory_disk(copy, tmp_path) == guest


def test_migrate_to_another_platform(ssh_host: Host, pve: FakePve, make: Callable[..., VM],
                                     tmp_path: Path) -> None:
    pve.storages["nodestore"]["format"] = "qcow2"
    vm = make("mover")
    guest = write_disk(ssh_host, vm, "qcow2", DATA, tmp_path)
    with memory_host() as target:
        result = anyvirt.migrate(vm, to=target, networks=BRIDGES)
        moved = target.vms.get("mover")
        assert memory_disk(moved, tmp_path) == guest
        assert result is not None
    assert ssh_host.vms.get(vm.id).name == "mover"  # the source stays unless asked


def test_an_unknown_host_key_is_refused(fake: InProcessFakePve, node: Sshd, nodestore: Path,
                                        tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    uri = ssh_uri(fake, node).replace(quote(str(node.known_hosts)), quote(str(empty)))
    with anyvirt.connect(uri, password=PASSWORD) as host:
        vm = host.vms.create(VMSpec(name="stranger", cpus=1, memory_mib=64, node="pve1",
                                    disks=[DiskSpec(size_gib=DISK_GIB, storage="nodestore")]))
        try:
            write_disk(host, vm, "raw", DATA, tmp_path)
            with pytest.raises(ConnectionFailed, match="host key"):
                vm.backup(tmp_path / "x.avbk")
            assert not (tmp_path / "x.avbk").exists()
        finally:
            vm.delete()


@pytest.mark.parametrize("transport", ["openssh", "sftp"])
def test_an_unknown_host_key_is_refused_on_a_streamed_move(
        fake: InProcessFakePve, node: Sshd, nodestore: Path, tmp_path: Path, temp_dir: Path,
        transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if transport == "sftp":
        monkeypatch.setattr(node_disks, "openssh_wanted", lambda: False)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    uri = ssh_uri(fake, node).replace(quote(str(node.known_hosts)), quote(str(empty)))
    with anyvirt.connect(uri, password=PASSWORD) as host, memory_host() as target:
        vm = host.vms.create(VMSpec(name=f"stranger-{transport}", cpus=1, memory_mib=64,
                                    node="pve1", disks=[DiskSpec(size_gib=DISK_GIB,
                                                                 storage="nodestore")]))
        try:
            write_disk(host, vm, "raw", DATA, tmp_path)
            with pytest.raises(ConnectionFailed, match=r"(?i)host key"):
                anyvirt.migrate(vm, to=target, networks=BRIDGES)
            assert not target.vms.exists(f"stranger-{transport}")
            assert list(temp_dir.iterdir()) == []
        finally:
            vm.delete()


def test_a_disk_without_a_path_on_the_node_is_not_supported(ssh_host: Host, tmp_path: Path) -> None:
    # local-lvm's volumes are LVs (/dev/pve/...): the stand-in node has none, so the read fails
    # naming the path, and nothing is left behind
    vm = ssh_host.vms.create(VMSpec(name="onlvm", cpus=1, memory_mib=64, node="pve1",
                                    disks=[DiskSpec(size_gib=DISK_GIB, storage="local-lvm")]))
    try:
        with pytest.raises(anyvirt.TaskFailed, match="/dev/pve/vm-"):
            vm.backup(tmp_path / "x.avbk")
        assert not (tmp_path / "x.avbk").exists()
    finally:
        vm.delete()


@pytest.mark.parametrize(("options", "why"), [
    ({"ssh": "pve1"}, "user@host"),
    ({"ssh": "root@pve1:99999"}, "port"),
    ({"ssh": "root@pve1;reboot"}, "not a host"),
    ({"ssh": "root@pve1", "ssh_key": "/nonexistent/key"}, "no such file"),
    ({"ssh_key": "/etc/hostname"}, "go with ssh="),
])
def test_bad_ssh_options_are_refused_before_any_request(fake: InProcessFakePve, traffic: Traffic,
                                                        options: dict[str, str], why: str) -> None:
    with pytest.raises(InvalidSpec, match=why):
        anyvirt.connect(fake.uri, password=PASSWORD, **options)
    assert traffic.requests == []


def test_the_node_name_goes_into_the_ssh_host() -> None:
    access = node_disks.NodeAccess(spec="root@{node}.lan:2222", key_filename=None, known_hosts=None,
                                   timeout=5)
    assert str(access.endpoint("pve2")) == "root@pve2.lan:2222"


@pytest.mark.parametrize("transport", ["openssh", "sftp"])
def test_a_connection_cut_mid_read_fails_cleanly(ssh_host: Host, pve: FakePve, node: Sshd,
                                                 tmp_path: Path, transport: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if transport == "sftp":
        monkeypatch.setattr(node_disks, "openssh_wanted", lambda: False)
    vm = ssh_host.vms.create(VMSpec(name=f"cut-{transport}", cpus=1, memory_mib=64, node="pve1",
                                    disks=[DiskSpec(size_gib=0.5, storage="nodestore")]))
    try:
        disk = vm.info().disks[0]
        volume = quote(str(disk.path), safe="")
        where = Path(ssh_host.native.nodes("pve1").storage("nodestore").content(volume).get()["path"])
        where.parent.mkdir(parents=True, exist_ok=True)
        with where.open("wb") as out:  # data all the way: the read takes a while
            block = os.urandom(4 * MIB)
            for _ in range(128):
                out.write(block)
        cuts: list[int] = []

        def cut_when_reading() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(node.sessions()) < (2 if transport == "openssh" else 1):
                time.sleep(0.01)
            time.sleep(0.3)
            cuts.append(node.cut())

        cutter = threading.Thread(target=cut_when_reading)
        cutter.start()
        with pytest.raises(anyvirt.ConnectionFailed, match=r"lost|connecting"):
            vm.backup(tmp_path / "cut.avbk")
        cutter.join()
        assert cuts and cuts[0] > 0
        assert not (tmp_path / "cut.avbk").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("cut.avbk")]
    finally:
        vm.delete()


# ------------------------------------------------------------------ streamed moves


def staging_watch(temp_dir: Path, largest: list[int]) -> Callable[[anyvirt.Task], None]:
    """A progress callback noting in ``largest[0]`` the largest file in the temp dir while the
    source is read (export and import): the read-back afterwards is the target's business (a
    memory:// target has no ranged reads, so its copy is exported whole to be compared)."""
    def watch(task: anyvirt.Task) -> None:
        if "verifying" in (task.message or "") or largest[1:]:
            largest[1:] = [1]
            return
        largest[0] = max(largest[0], largest_file(temp_dir))
    return watch


def node_path(host: Host, volid: str | None) -> Path:
    """Where PVE says volume ``volid`` lives on the node (in the stand-in's directory)."""
    assert volid is not None
    located = host.native.nodes("pve1").storage("nodestore").content(quote(volid, safe="")).get()
    return Path(located["path"])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("transport", ["openssh", "sftp"])
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_move_streams_from_the_node_with_no_staging_file(
        ssh_host: Host, pve: FakePve, make: Callable[..., VM], tmp_path: Path, temp_dir: Path,
        fmt: str, transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The volume is read from the node as the target's import reads it: no file in the
    temp dir ever holds the disk, and the copy is the guest's disk byte for byte."""
    if transport == "sftp":
        monkeypatch.setattr(node_disks, "openssh_wanted", lambda: False)
    pve.storages["nodestore"]["format"] = fmt
    vm = make(f"stream-{fmt}")
    guest = write_disk(ssh_host, vm, fmt, DATA, tmp_path)
    source = node_path(ssh_host, vm.info().disks[0].path)
    before = sha256_of(source)
    largest = [0]

    with memory_host() as target:
        anyvirt.migrate(vm, to=target, networks=BRIDGES, on_progress=staging_watch(temp_dir, largest))
        assert memory_disk(target.vms.get(f"stream-{fmt}"), tmp_path) == guest
    assert largest[0] < MIB, f"a {largest[0]}-byte file was staged"
    assert list(temp_dir.iterdir()) == []
    assert sha256_of(source) == before


def test_a_streamed_raw_volume_shows_its_holes(ssh_host: Host, pve: FakePve, make: Callable[..., VM],
                                             tmp_path: Path) -> None:
    """The node says where a raw volume's holes are (``qemu-img map`` there), so the raw view
    the import reads answers SEEK_HOLE/SEEK_DATA: the zeros are skipped, never carried
    over SSH, and what is read is still the guest's disk."""
    pve.storages["nodestore"]["format"] = "raw"
    vm = make("stream-holes")
    guest = write_disk(ssh_host, vm, "raw", DATA, tmp_path)
    # the zeros as holes, as a thin raw volume on a directory storage keeps them
    subprocess.run(["fallocate", "--dig-holes", str(node_path(ssh_host, vm.info().disks[0].path))],
                   check=True)
    with ssh_host.driver.stream_disks(vm.id, Job("streaming", 120)) as disks:
        assert disks is not None
        fd = os.open(disks[0].path, os.O_RDONLY)
        try:
            assert os.lseek(fd, 0, os.SEEK_HOLE) == 3 * MIB  # where the data at 0 ends
            assert os.lseek(fd, 3 * MIB, os.SEEK_DATA) == 40 * MIB
            assert os.pread(fd, len(guest), 0) == guest
        finally:
            os.close(fd)


@pytest.mark.usefixtures("linked_volume_standin")
def test_a_linked_clone_streams_onto_the_base_pve_names(
        ssh_host: Host, pve: FakePve, make: Callable[..., VM], tmp_path: Path,
        temp_dir: Path) -> None:
    """A linked clone's qcow2 is read stacked on the base volume PVE's name for it gives,
    never on the backing file its header names: here a decoy full of 0xcd."""
    pve.storages["nodestore"]["format"] = "qcow2"
    base = make("stream-base")
    base.mark_template()
    flat = bytearray(write_disk(ssh_host, base, "qcow2", DATA, tmp_path))
    clone = base.clone("stream-linked", linked=True)
    try:
        top = node_path(ssh_host, clone.info().disks[0].path)
        assert top != node_path(ssh_host, base.info().disks[0].path)
        decoy = tmp_path / "decoy.qcow2"
        size = str(int(DISK_GIB * 1024 * MIB))
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(decoy), size], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0xcd 0 {size}", str(decoy)],
                       check=True, capture_output=True)
        top.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(decoy), str(top), size], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 20M 1M", str(top)],
                       check=True, capture_output=True)
        flat[20 * MIB:21 * MIB] = b"\xab" * MIB
        largest = [0]
        with memory_host() as target:
            anyvirt.migrate(clone, to=target, networks=BRIDGES,
                            on_progress=staging_watch(temp_dir, largest))
            assert memory_disk(target.vms.get("stream-linked"), tmp_path) == bytes(flat)
        assert largest[0] < MIB, f"a {largest[0]}-byte file was staged"
        assert list(temp_dir.iterdir()) == []
    finally:
        clone.delete()


def test_a_backing_file_pve_does_not_name_is_never_followed(
        ssh_host: Host, pve: FakePve, make: Callable[..., VM], tmp_path: Path,
        temp_dir: Path) -> None:
    """A qcow2 volume that is no linked clone in PVE's naming but whose header names a
    backing file: not streamed on the header's word; the copy path refuses it, saying so."""
    pve.storages["nodestore"]["format"] = "qcow2"
    vm = make("stream-stray-backing")
    where = node_path(ssh_host, vm.info().disks[0].path)
    where.parent.mkdir(parents=True, exist_ok=True)
    decoy = tmp_path / "decoy.raw"
    decoy.write_bytes(b"\xcd" * MIB)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(decoy),
                    str(where), str(int(DISK_GIB * 1024 * MIB))], check=True)
    with memory_host() as target:
        with pytest.raises(InvalidSpec, match="backing file"):
            anyvirt.migrate(vm, to=target, networks=BRIDGES)
        assert not target.vms.exists("stream-stray-backing")
    assert list(temp_dir.iterdir()) == []


@pytest.mark.parametrize("transport", ["openssh", "sftp"])
def test_a_connection_cut_mid_stream_leaves_nothing(
        ssh_host: Host, node: Sshd, tmp_path: Path, temp_dir: Path, transport: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's SSH sessions killed while the import reads: ConnectionFailed, no VM and
    nothing of one on the target, the source's volume as it was, the temp dir empty."""
    if transport == "sftp":
        monkeypatch.setattr(node_disks, "openssh_wanted", lambda: False)
    name = f"cut-stream-{transport}"
    vm = ssh_host.vms.create(VMSpec(name=name, cpus=1, memory_mib=64, node="pve1",
                                    disks=[DiskSpec(size_gib=0.25, storage="nodestore")]))
    try:
        where = node_path(ssh_host, vm.info().disks[0].path)
        where.parent.mkdir(parents=True, exist_ok=True)
        with where.open("wb") as out:  # data all the way: the read takes a while
            block = os.urandom(4 * MIB)
            for _ in range(64):
                out.write(block)
        before = sha256_of(where)
        cuts: list[int] = []

        def cut_midway(task: anyvirt.Task) -> None:
            if not cuts and (task.progress or 0) >= 10 and node.sessions():
                cuts.append(node.cut())

        with memory_host() as target:
            with pytest.raises(anyvirt.ConnectionFailed, match=r"lost|connecting"):
                anyvirt.migrate(vm, to=target, networks=BRIDGES, on_progress=cut_midway)
            assert cuts and cuts[0] > 0, "the move failed before the cut"
            assert not target.vms.exists(name)
            assert target.vms.list() == [] or all(v.name != name for v in target.vms.list())
        assert sha256_of(where) == before
        assert ssh_host.vms.get(vm.id).state is anyvirt.PowerState.STOPPED
        assert list(temp_dir.iterdir()) == []
    finally:
        vm.delete()


def test_the_nodes_map_is_only_data() -> None:
    """``qemu-img map`` output from the node is checked before it says where zeros are: a
    gap, an overlap, a short map or a wrong type means no map (every byte read), never
    zeros where the node did not show them."""
    from anyvirt_proxmox.node_streams import map_status

    def extent(start: int, length: int, data: bool) -> dict[str, object]:
        return {"start": start, "length": length, "data": data, "zero": not data}

    good = json.dumps([extent(0, 4096, True), extent(4096, 8192, False), extent(12288, 4096, True)])
    status = map_status(good.encode(), 16384)
    assert status is not None
    assert status(0, 16384) == [(4096, False), (8192, True), (4096, False)]
    assert status(6000, 8000) == [(6288, True), (1712, False)]
    assert status(16384, 512) == [(512, True)]  # the sector-rounded tail past the file
    for bad in (b"not json", b"{}", json.dumps([extent(0, 4096, True)]).encode(),  # short
                json.dumps([extent(0, 4096, True), extent(8192, 8192, False)]).encode(),  # gap
                json.dumps([{"start": "0", "length": 16384, "data": True, "zero": False}]).encode(),
                json.dumps([extent(0, 0, True), extent(0, 16384, True)]).encode()):
        assert map_status(bad, 16384) is None, bad
