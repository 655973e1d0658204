"""Live migration of a running guest between two daemons, evacuation, and faults:
unreachable targets, a daemon killed mid-operation, hostile names, disks outside
the pool, and a create that fails half-way."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from anyvirt_libvirt.demo_image import MARKER, last_counter, read_console, wait_for_counter
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from libvirt_support import console_log, destroy, guest_spec

import anyvirt
from anyvirt.errors import AnyvirtError, Cancelled, ConnectionFailed, InvalidSpec, NotFound
from anyvirt.host import Host
from anyvirt.model import DiskSpec, MigrationResult, PowerState, VMSpec
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM


def test_live_migration_keeps_the_guest_running(
    pair: tuple[Host, Host], spec_for: Callable[[str], VMSpec], vms: Callable[[VM], VM]
) -> None:
    source, target = pair
    vm = vms(source.vms.create(spec_for(unique_name("live"))))
    old_log = console_log(vm)
    vm.start()
    before = wait_for_counter(old_log, 3)
    progress: list[float] = []
    result = vm.migrate(to=target, live=True, on_progress=lambda t: progress.append(t.progress or 0))
    assert isinstance(result, MigrationResult) and result.live
    assert result.bytes_transferred and result.bytes_transferred > 0
    assert result.downtime_ms is not None and result.downtime_ms >= 0
    # only on the target now, persistent there, running
    assert not source.vms.exists(vm.id)
    moved = target.vms.get(vm.id)
    assert moved.state is PowerState.RUNNING
    new_log = console_log(moved)
    assert new_log != old_log
    assert not old_log.exists(), "nothing of the VM is left on the source"
    after = wait_for_counter(new_log, before + 2)
    assert MARKER not in read_console(new_log), "no reboot on the target"
    assert after >= before + 2, "the counter carried on from where it was"
    first = int(read_console(new_log).split("COUNT ")[1].split()[0])
    assert first >= before, "the counter never restarted"
    raw = libvirt.open(target.driver.link.uri)  # type: ignore[attr-defined]
    try:
        assert raw.lookupByUUIDString(vm.id).isPersistent()
    finally:
        raw.close()
    vms(moved)


def test_evacuate_moves_every_vm(
    pair: tuple[Host, Host], spec_for: Callable[[str], VMSpec], vms: Callable[[VM], VM]
) -> None:
    source, target = pair
    made = [vms(source.vms.create(spec_for(unique_name("evac")))) for _ in range(2)]
    made[0].start()
    node = source.nodes.list()[0]
    results = source.evacuate(node, to=[target])
    assert sorted(r.vm_id for r in results) == sorted(vm.id for vm in made)
    assert {r.live for r in results} == {True, False}
    assert not source.vms.list()
    assert target.vms.get(made[0].id).state is PowerState.RUNNING
    assert target.vms.get(made[1].id).state is PowerState.STOPPED
    for vm in made:
        vms(target.vms.get(vm.id))


@pytest.fixture(scope="module")
def spare_daemon() -> Iterator[LibvirtDaemon]:
    """A third daemon, to be killed and restarted."""
    daemon = LibvirtDaemon(name="spare").start()
    try:
        yield daemon
    finally:
        daemon.stop()


def test_migration_to_an_unreachable_target_fails_typed(
    host: Host, spare_daemon: LibvirtDaemon, spec_for: Callable[[str], VMSpec],
    vms: Callable[[VM], VM],
) -> None:
    vm = vms(host.vms.create(spec_for(unique_name("stay"))))
    vm.start()
    wait_for_counter(console_log(vm), 1)
    with anyvirt.connect(spare_daemon.anyvirt_uri) as gone:
        spare_daemon.kill()
        try:
            with pytest.raises(ConnectionFailed):
                vm.migrate(to=gone, live=True)
        finally:
            spare_daemon.restart()
    assert host.vms.get(vm.id).state is PowerState.RUNNING
    seen = last_counter(console_log(vm)) or 0
    wait_for_counter(console_log(vm), seen + 1)


def test_daemon_killed_mid_operation_then_reconnect(
    spare_daemon: LibvirtDaemon, spec_for: Callable[[str], VMSpec]
) -> None:
    with anyvirt.connect(spare_daemon.anyvirt_uri) as host:
        vm = host.vms.create(spec_for(unique_name("kill")))
        try:
            failures: list[BaseException] = []
            killer = threading.Timer(0.3, spare_daemon.kill)
            killer.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # listing, over and over, while the daemon dies
                try:
                    host.vms.list()
                except AnyvirtError as exc:
                    failures.append(exc)
                    break
            killer.join()
            assert failures and isinstance(failures[0], ConnectionFailed), failures
            with pytest.raises(ConnectionFailed):
                host.vms.get(vm.id)  # still down: a typed error, not a hang
            spare_daemon.restart()
            assert host.vms.get(vm.id).name == vm.name  # the next call reconnected
        finally:
            destroy(vm)


@pytest.mark.parametrize(
    "name", ["it's \"quoted\"", "<b>&amp; tags<b>", "with spaces", "Käse-Ünïcødé-名前"]
)
def test_hostile_names_are_escaped(host: Host, name: str, vms: Callable[[VM], VM]) -> None:
    vm = vms(host.vms.create(VMSpec(name=name, cpus=1, memory_mib=16, nics=[])))
    assert host.vms.get(name).id == vm.id
    assert vm.info().name == name
    assert name in [v.name for v in host.vms.list()]


def test_a_name_libvirt_cannot_take_is_invalid_spec(host: Host) -> None:
    with pytest.raises(InvalidSpec, match="/"):
        host.vms.create(VMSpec(name="</closing>", cpus=1, memory_mib=16, nics=[]))
    assert not host.vms.exists("</closing>")


def _pool_files(host: Host) -> set[str]:
    conn = host.driver.native  # type: ignore[attr-defined]
    pool = conn.storagePoolLookupByName("default")
    pool.refresh(0)
    return set(pool.listVolumes())


def test_a_create_that_fails_half_way_leaves_nothing(host: Host, guest_image: Path) -> None:
    before_files, before_vms = _pool_files(host), {v.id for v in host.vms.list()}
    # the disk is made first; libvirt then refuses to define a name with a '/'
    with pytest.raises(AnyvirtError):
        host.vms.create(guest_spec("half/way", guest_image))
    assert _pool_files(host) == before_files, "the volume made before the failed define is gone"
    assert {v.id for v in host.vms.list()} == before_vms
    with pytest.raises(NotFound):
        host.vms.get("half/way")


def test_disk_paths_outside_the_pool_are_refused(host: Host, tmp_path: Path) -> None:
    before = _pool_files(host)
    with pytest.raises(InvalidSpec):
        host.vms.create(VMSpec(name=unique_name("outside"), memory_mib=16,
                               disks=[DiskSpec(size_gib=0.01, storage=str(tmp_path))]))
    assert _pool_files(host) == before
    # a disk someone attached from outside the pool is never deleted with the VM
    outside = tmp_path / "outside.qcow2"
    outside.write_bytes(b"not anyvirt's")
    conn = host.driver.native  # type: ignore[attr-defined]
    name = unique_name("foreign")
    xml = (f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>16</memory>"
           "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
           f"<source file='{outside}'/><target dev='vda' bus='virtio'/></disk></devices></domain>")
    conn.defineXML(xml)
    host.vms.get(name).delete(disks=True)
    assert outside.read_bytes() == b"not anyvirt's"


def test_live_migration_reports_progress_and_can_be_cancelled(
    pair: tuple[Host, Host], spec_for: Callable[[str], VMSpec], vms: Callable[[VM], VM]
) -> None:
    source, target = pair
    vm = vms(source.vms.create(spec_for(unique_name("cancel"))))
    vm.start()
    wait_for_counter(console_log(vm), 1)
    vm.native.migrateSetMaxSpeed(1, 0)  # 1 MiB/s: 16 MiB of guest RAM takes a while
    target_volumes = _pool_files(target)
    task = vm.migrate(to=target, live=True, wait=False)
    deadline = time.monotonic() + 20
    while (task.progress or 0) <= 0 and not task.done and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not task.done and (task.progress or 0) > 0, "progress comes from the migration job"
    task.cancel()
    with pytest.raises(Cancelled):
        task.wait(30)
    assert source.vms.get(vm.id).state is PowerState.RUNNING
    assert not target.vms.exists(vm.id)
    assert _pool_files(target) == target_volumes, "the pre-created target volumes are removed"


class _KillOnNewVolume:
    """Kills a daemon as soon as a new file appears in its pool (an operation has begun
    making a volume), then restarts it once the operation has failed."""

    def __init__(self, daemon: LibvirtDaemon, watched: LibvirtDaemon | None = None) -> None:
        self.daemon = daemon  # the one killed, once a new volume appears in ``watched``'s pool
        self.pool_dir = (watched or daemon).pool_path
        self.before = set(os.listdir(self.pool_dir))
        self.thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.new_files():
                self.daemon.kill()
                return
            time.sleep(0.002)

    def new_files(self) -> set[str]:
        return set(os.listdir(self.pool_dir)) - self.before

    def __enter__(self) -> _KillOnNewVolume:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.thread.join()
        self.daemon.restart()


def test_a_daemon_killed_mid_create_or_clone_leaves_no_volume_once_reconnected(
    spare_daemon: LibvirtDaemon, tmp_path: Path
) -> None:
    """The partial volume of an upload or copy cut short stays in the pool (the clean-up
    cannot reach a dead daemon); the in-flight record lets the next connection remove it."""
    image = tmp_path / "big.raw"
    image.write_bytes(os.urandom(64 * 1024 * 1024))  # incompressible: a real upload
    spec = VMSpec(name=unique_name("cut"), cpus=1, memory_mib=16,
                  disks=[DiskSpec(image=str(image))], nics=[])
    with anyvirt.connect(spare_daemon.anyvirt_uri) as host:
        with _KillOnNewVolume(spare_daemon) as watch, pytest.raises(ConnectionFailed):
            host.vms.create(spec)
        assert watch.new_files(), "the dead daemon left a partial volume"
        host.vms.list()  # the next call reconnects, and sweeps
        assert watch.new_files() == set()

        vm = host.vms.create(spec)
        try:
            with _KillOnNewVolume(spare_daemon) as watch, pytest.raises(ConnectionFailed):
                vm.clone(unique_name("cut-clone"))
            assert watch.new_files(), "the dead daemon left a partial copy"
            assert [v.id for v in host.vms.list()] == [vm.id]
            assert watch.new_files() == set()
        finally:
            destroy(vm)


def test_a_target_killed_mid_migration_keeps_the_source_and_is_cleaned_once_reconnected(
    host: Host, spare_daemon: LibvirtDaemon, spec_for: Callable[[str], VMSpec],
    vms: Callable[[VM], VM],
) -> None:
    vm = vms(host.vms.create(spec_for(unique_name("cut-move"))))
    with anyvirt.connect(spare_daemon.anyvirt_uri) as target:
        with _KillOnNewVolume(spare_daemon) as watch, pytest.raises(ConnectionFailed):
            vm.migrate(to=target, live=False)
        assert host.vms.get(vm.id).state is PowerState.STOPPED, "the source keeps its VM"
        assert Path(vm.info().disks[0].path or "").exists()
        assert watch.new_files(), "the dead target kept the volume made for the VM"
        assert not target.vms.exists(vm.id)  # the next call reconnects, and sweeps
        assert watch.new_files() == set()


def test_a_source_killed_mid_offline_migration_is_blamed_on_the_source(
    host: Host, spare_daemon: LibvirtDaemon, libvirt_daemon_pair: tuple[LibvirtDaemon, LibvirtDaemon],
    tmp_path: Path,
) -> None:
    image = tmp_path / "big.raw"
    image.write_bytes(os.urandom(64 * 1024 * 1024))  # incompressible: the copy takes a while
    with anyvirt.connect(spare_daemon.anyvirt_uri) as source:
        vm = source.vms.create(VMSpec(name=unique_name("src-dies"), cpus=1, memory_mib=16,
                                      disks=[DiskSpec(image=str(image))], nics=[]))
        # the target is the session daemon: the source dies once the target's volume exists
        with _KillOnNewVolume(spare_daemon, watched=libvirt_daemon_pair[0]), \
                pytest.raises(ConnectionFailed) as failed:
            vm.migrate(to=host, live=False)
        message = str(failed.value)
        # it names the source (its socket, or "the source" when the stream broke), never the target
        assert "the source" in message or str(spare_daemon.socket_path) in message, message
        assert "write volume" not in message and "the target" not in message, message
        assert not host.vms.exists(vm.name), "nothing of the copy on the target"
        assert source.vms.get(vm.id).state is PowerState.STOPPED, "the source keeps its VM"
        source.vms.get(vm.id).delete()
