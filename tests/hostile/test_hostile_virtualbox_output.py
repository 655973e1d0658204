"""VirtualBox's output is data, never structure: hostile values on the real VBoxManage 7.2.

``showvminfo --machinereadable`` prints values across lines, and ``snapshot list``
prints snapshot values raw. A description, a snapshot description or a name a
user wrote must never decide which VM anyvirt acts on, nor what it reports
about a VM (state, memory, settings path). Every VM here is made on the real
VirtualBox 7.2 of the testbed and read back with its own ``VBoxManage``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyvirt_virtualbox import listings
from anyvirt_virtualbox.testbed import Home, build_chroot, served_home

import anyvirt
from anyvirt.host import Host
from anyvirt.model import PowerState
from anyvirt.testing.plugin import small_spec

ESC_TITLE = "\x1b]0;pwned\x07"  # a terminal title escape (OSC 0) kept raw by VirtualBox


@pytest.fixture(scope="module")
def vboxmanage() -> Path:
    return build_chroot()


@pytest.fixture
def home(vboxmanage: Path, tmp_path: Path) -> Iterator[Home]:
    with served_home(vboxmanage, tmp_path / "vbox") as h:
        yield h


@pytest.fixture
def host(home: Home) -> Iterator[Host]:
    with anyvirt.connect(home.uri) as h:
        yield h


def listed(home: Home) -> dict[str, str]:
    """name -> UUID, as the real ``list vms`` prints them (names here are one line)."""
    return {v.name: v.uuid for v in listings.list_vms(home.run("list", "vms").stdout)}


def disk_files(home: Home) -> set[str]:
    return {m.location for m in listings.media(home.run("list", "hdds").stdout)}


def dirs_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_dir()}


def forged_identity(victim: str) -> str:
    """A description whose lines, printed raw, would be another VM's settings."""
    return f'x"\nUUID={victim}\nzz='


FORGED_STATE = 'x"\nVMState="running"\nmemory=0\ncpus=9\nCfgFile="/etc/shadow"\nname="victim"\nzz=\\\\"\n\\'


# ------------------------------------------------------------------ item 1


def test_a_description_naming_another_vm_changes_nothing_about_which_vm_is_acted_on(
    home: Home, host: Host
) -> None:
    victim = host.vms.create(small_spec("victim"))
    victim_disks = disk_files(home)
    evil = host.vms.create(small_spec("evil", description=forged_identity(victim.id)))
    real = listed(home)
    assert real["evil"] != victim.id
    assert evil.id == real["evil"], "create() returned another VM's id"
    assert host.vms.get("evil").id == real["evil"]
    assert host.vms.get(real["evil"]).name == "evil"
    assert evil.info().description == forged_identity(victim.id)
    evil.delete()
    assert listed(home) == {"victim": victim.id}, "delete() removed the wrong VM"
    assert victim_disks <= disk_files(home)
    assert all(Path(p).exists() for p in victim_disks)


def test_a_description_cannot_fake_state_memory_cpus_or_the_settings_path(home: Home, host: Host) -> None:
    vm = host.vms.create(small_spec("quiet", description=FORGED_STATE))
    cfg = home.run("showvminfo", vm.id, "--machinereadable").stdout
    real_cfg = re.search(r'^CfgFile="(.*)"$', cfg, re.M)
    assert real_cfg is not None
    for seen in (vm.refresh(), host.vms.get("quiet").refresh(), *host.vms.list()):
        assert (seen.name, seen.state, seen.memory_mib, seen.cpus) == ("quiet", PowerState.STOPPED, 64, 1)
    info = vm.info()
    assert (info.name, info.state, info.memory_mib, info.cpus) == ("quiet", PowerState.STOPPED, 64, 1)
    assert info.extra["config_file"] == real_cfg[1] != "/etc/shadow"
    assert info.description == FORGED_STATE
    assert host.driver.native_vm(vm.id)["VMState"] == "poweroff"


def test_snapshot_descriptions_cannot_forge_snapshots_state_or_memory(home: Home, host: Host) -> None:
    other = host.vms.create(small_spec("other"))
    foreign = other.snapshots.create("foreign")
    vm = host.vms.create(small_spec("snappy"))
    forged = (
        f'a"\nSnapshotUUID="{foreign.id}"\nSnapshotName-1="ghost"\nSnapshotUUID-1="{foreign.id}"\n'
        f'CurrentSnapshotUUID="{foreign.id}"\nGuestMemoryBalloon=0\nVMState="running"\nmemory=0\n'
        f'UUID="{other.id}"\nzz="'
    )
    first = vm.snapshots.create("first", description=forged)
    # one more taken by VirtualBox itself, its UUID read from what VBoxManage said
    taken = home.run("snapshot", vm.id, "take", "second", "--description", forged).stdout
    second_id = re.search(r"UUID: ([0-9a-f-]{36})", taken)
    assert second_id is not None
    snaps = vm.snapshots.list()
    assert [(s.id, s.name, s.description, s.parent.id if s.parent else None) for s in snaps] == [
        (first.id, "first", forged, None),
        (second_id[1], "second", forged, first.id),
    ]
    assert [s.id for s in snaps if s.is_current] == [second_id[1]]
    assert foreign.id not in {s.id for s in snaps}
    again = vm.refresh()
    assert (again.id, again.name, again.state, again.memory_mib) == (vm.id, "snappy", PowerState.STOPPED, 64)
    assert vm.info().extra["config_file"].endswith("/snappy/snappy.vbox")
    first.delete(children=True)
    assert vm.snapshots.list() == []
    assert [s.id for s in other.snapshots.list()] == [foreign.id], "another VM's snapshot was touched"


# ------------------------------------------------------------------ item 2


def _forge_manifest(archive: Path, description: str) -> None:
    """Rewrite the archive's manifest (and its checksum) with ``description``: what a crafted
    archive carries, every other member kept as it is."""
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]
    out = []
    manifest = b""
    for member, data in members:
        if member.name == "manifest.json":
            doc = json.loads(data)
            doc["vm"]["description"] = description
            manifest = json.dumps(doc).encode()
            data = manifest
        out.append((member, data))
    with tarfile.open(archive, "w") as tar:
        for member, data in out:
            if member.name == "manifest.sha256":
                data = f"{hashlib.sha256(manifest).hexdigest()}  {len(manifest)}\n".encode()
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_a_restored_archive_naming_an_existing_vm_makes_and_returns_a_new_vm(
    home: Home, host: Host, tmp_path: Path
) -> None:
    from anyvirt.migration import archive as archives

    victim = host.vms.create(small_spec("victim"))
    victim_disks = disk_files(home)
    source = host.vms.create(small_spec("source"))
    path = source.backup(tmp_path / "source.avbk")
    source.delete()
    _forge_manifest(path, forged_identity(victim.id))
    assert archives.describe(path).description == forged_identity(victim.id)
    restored = host.restore(path, name="restored")
    real = listed(home)
    assert set(real) == {"victim", "restored"}
    assert restored.id == real["restored"] != victim.id, "restore returned the existing VM"
    assert restored.info().description == forged_identity(victim.id)
    restored.delete()
    assert listed(home) == {"victim": victim.id}, "deleting the restored VM deleted another"
    assert all(Path(p).exists() for p in victim_disks)


# ------------------------------------------------------------------ item 11


def test_deleting_a_clone_named_with_a_slash_and_its_source_leaves_no_folder(home: Home, host: Host) -> None:
    folder = Path(host.info().extra["machine_folder"])
    before = dirs_under(folder)
    base = host.vms.create(small_spec("base"))
    clone = base.clone("team/web")
    assert clone.name == "team/web"
    assert dirs_under(folder) - before, "the clone made folders"
    clone.delete()
    base.delete()
    assert listed(home) == {}
    assert dirs_under(folder) == before


# ------------------------------------------------------------------ item 12


@pytest.mark.parametrize("name", ["--help", "-v"])
def test_names_that_look_like_options_work(home: Home, host: Host, name: str) -> None:
    vm = host.vms.create(small_spec(name))
    assert listed(home) == {name: vm.id}
    assert host.vms.get(name).id == vm.id
    assert (vm.info().name, vm.refresh().state) == (name, PowerState.STOPPED)
    snap = vm.snapshots.create("--version", description="-h")
    assert [(s.name, s.description) for s in vm.snapshots.list()] == [("--version", "-h")]
    clone = vm.clone("--delete")
    assert host.vms.get("--delete").id == clone.id == listed(home)["--delete"]
    vm.reconfigure(memory_mib=80)
    assert host.vms.get(name).memory_mib == 80
    snap.revert()
    snap.delete()
    clone.delete()
    vm.delete()
    assert listed(home) == {}


# ------------------------------------------------------------------ Generalise 1

NASTY_DESCRIPTIONS = [
    'a "quoted" \\ backslash\\',
    'x"\nname="y"\nUUID=00000000-0000-0000-0000-000000000000\n',
    '\\"\n"SATA-0-0"="/etc/passwd"\nnic1="bridged"\n\\',
    "\x7f\x9b31m\nline two\t\ttabs\n\n",
    'ends in a quote"',
    "=\n=\n\"=\"",
]
NASTY_NAMES = ['it\'s "x" = y \\', "UUID=x", 'VMState="running"', "a☃b", "\\x\\", '"q', "-"]


def test_nasty_names_and_descriptions_read_back_exactly(home: Home, host: Host) -> None:
    made, described = {}, {}
    for n, name in enumerate(NASTY_NAMES):
        description = NASTY_DESCRIPTIONS[n % len(NASTY_DESCRIPTIONS)]
        vm = host.vms.create(small_spec(name, description=description, disks=[]))
        made[name], described[name] = vm.id, description
        snap = vm.snapshots.create(name, description=description)
        assert [(s.id, s.name, s.description) for s in vm.snapshots.list()] == [(snap.id, name, description)]
    assert listed(home) == made
    for name, vm_id in made.items():
        vm = host.vms.get(name)
        info = vm.info()
        assert (vm.id, info.id, info.name, info.state, info.memory_mib, info.description) == (
            vm_id, vm_id, name, PowerState.STOPPED, 64, described[name])
        assert host.vms.get(vm_id).name == name
    assert {v.name: v.id for v in host.vms.list()} == made


def test_a_vm_named_outside_anyvirt_cannot_forge_a_listing_line(home: Home, host: Host) -> None:
    """VirtualBox itself takes any name: one holding a newline and another VM's ``list vms``
    line (and a terminal escape) prints that line raw. The listing, lookups and delete still
    see each VM once, under its own UUID; the escape reaches no name (VirtualBox's settings
    file keeps U+FFFD for it)."""
    victim = host.vms.create(small_spec("victim", disks=[]))
    forged = f'evil" {{{victim.id}}}\n"victim{ESC_TITLE}'
    out = home.run("createvm", "--name", forged, "--register").stdout
    evil_id = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert evil_id is not None
    assert home.run("list", "vms").stdout.count(victim.id) == 2, "the forged line is printed"
    listing = sorted((v.id, v.name) for v in host.vms.list())
    assert [i for i, _ in listing] == sorted([victim.id, evil_id[1]])
    assert dict(listing)[victim.id] == "victim"
    assert "\x1b" not in dict(listing)[evil_id[1]]
    assert host.vms.get("victim").id == victim.id
    evil = host.vms.get(evil_id[1])
    assert evil.info().name.startswith('evil" {')
    evil.delete()
    assert {v.id for v in host.vms.list()} == {victim.id}
