"""The collection's integration targets, run by the real ansible-playbook against the real testbeds:
the libvirt daemon, vcsim and fakepve, one inventory host each, in parallel as Ansible runs
hosts. Each run is checked as a user would: it passes, a second run reports no change, and
check mode changes nothing on the platforms."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from ansible_support import PlaybookRun, local_inventory, role_playbook, run_playbook
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from anyvirt_proxmox.testbed.fakepve import FakePveTestbed
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt


@pytest.fixture
def platforms(
    libvirt_daemon: LibvirtDaemon, vcsim_vcenter: Vcsim, proxmox_testbed: FakePveTestbed
) -> dict[str, dict[str, Any]]:
    """Per inventory host, the variables that point the targets at one testbed."""
    return {
        "libvirt": {"anyvirt_uri": libvirt_daemon.anyvirt_uri},
        "vsphere": {
            "anyvirt_uri": vcsim_vcenter.anyvirt_uri_with_ca,
            "anyvirt_password": vcsim_vcenter.password,
        },
        "proxmox": {"anyvirt_uri": proxmox_testbed.uri, "anyvirt_password": proxmox_testbed.password},
    }


def names_on(platform: dict[str, Any], prefix: str) -> dict[str, anyvirt.VMSummary]:
    with anyvirt.connect(platform["anyvirt_uri"], password=platform.get("anyvirt_password")) as host:
        return {vm.name: vm.summary for vm in host.vms.list() if vm.name.startswith(prefix)}


def everywhere(platforms: dict[str, dict[str, Any]], prefix: str) -> dict[str, dict[str, anyvirt.VMSummary]]:
    return {name: names_on(platform, prefix) for name, platform in platforms.items()}


def ok(run: PlaybookRun, hosts: int = 3) -> PlaybookRun:
    assert run.returncode == 0 and run.failed == 0 and len(run.recap) == hosts, run.output[-8000:]
    return run


def changed(run: PlaybookRun) -> dict[str, int]:
    return {host: counts["changed"] for host, counts in run.recap.items()}


# five playbook runs of some 18 module runs each: a minute and a half on an idle machine
@pytest.mark.timeout(900)
def test_lifecycle_runs_twice_and_check_mode_changes_nothing(
    platforms: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    prefix = f"ans-{uuid.uuid4().hex[:6]}"
    home = tmp_path / "home"
    inventory = local_inventory(
        home, {name: {**platform, "prefix": prefix} for name, platform in platforms.items()}
    )
    lifecycle = role_playbook(tmp_path, "anyvirt_lifecycle")
    teardown = role_playbook(tmp_path, "anyvirt_teardown")
    nothing = dict.fromkeys(platforms, 0)
    try:
        checked = ok(run_playbook(lifecycle, home, inventory, "--check", "--diff"))
        assert all(count >= 4 for count in changed(checked).values()), (
            checked.output
        )  # it says what it would do
        assert everywhere(platforms, prefix) == {key: {} for key in platforms}  # ...and does none of it

        first = ok(run_playbook(lifecycle, home, inventory, "--diff"))
        assert all(count >= 4 for count in changed(first).values()), first.output
        made = everywhere(platforms, prefix)
        for name, vms in made.items():
            assert sorted(vms) == [f"{prefix}-base", f"{prefix}-web-1", f"{prefix}-web-2"], name
            web1 = vms[f"{prefix}-web-1"]
            assert (web1.state, web1.cpus, web1.memory_mib) == (anyvirt.PowerState.RUNNING, 2, 128), name

        assert changed(ok(run_playbook(lifecycle, home, inventory))) == nothing
        assert everywhere(platforms, prefix) == made

        assert changed(ok(run_playbook(teardown, home, inventory))) == dict.fromkeys(platforms, 1)  # one loop
        assert everywhere(platforms, prefix) == {key: {} for key in platforms}
        assert changed(ok(run_playbook(teardown, home, inventory))) == nothing
    finally:
        run_playbook(teardown, home, inventory)


def remove_named(platform: dict[str, Any], prefix: str) -> None:
    with anyvirt.connect(platform["anyvirt_uri"], password=platform.get("anyvirt_password")) as host:
        for vm in host.vms.list():
            if vm.name.startswith(prefix):
                vm.delete(disks=True)


@pytest.mark.timeout(600)
def test_backup_restore_and_typed_errors_on_libvirt(libvirt_daemon: LibvirtDaemon, tmp_path: Path) -> None:
    prefix = f"ans-{uuid.uuid4().hex[:6]}"
    home = tmp_path / "home"
    archives = tmp_path / "archives"
    archives.mkdir()
    repository = tmp_path / "repository"
    passphrase = f"never-printed-{uuid.uuid4().hex[:8]}"
    platform = {"anyvirt_uri": libvirt_daemon.anyvirt_uri}
    inventory = local_inventory(
        home,
        {
            "libvirt": {
                **platform,
                "prefix": prefix,
                "archive_dir": str(archives),
                "repository_dir": str(repository),
                "repository_passphrase": passphrase,
            }
        },
    )
    playbook = role_playbook(tmp_path, "anyvirt_backup_restore")
    try:
        checked = ok(run_playbook(playbook, home, inventory, "--check", "--diff"), hosts=1)
        # a VM that an earlier task would make is no error in check mode; the bad spec is
        assert checked.recap["libvirt"]["changed"] == 6 and checked.recap["libvirt"]["ignored"] == 2
        assert names_on(platform, prefix) == {} and list(archives.iterdir()) == []
        assert not repository.exists()  # check mode makes no repository either

        first = ok(run_playbook(playbook, home, inventory, "--diff"), hosts=1)
        assert first.recap["libvirt"]["changed"] == 5
        made = [f"{prefix}-copy", f"{prefix}-fromrepo", f"{prefix}-orig"]
        assert sorted(names_on(platform, prefix)) == made
        assert [p.name for p in archives.iterdir()] == [f"{prefix}-orig.avbk"]
        with anyvirt.BackupRepository(repository, passphrase=passphrase, create=False) as repo:
            assert [p.vm_name for p in repo.points()] == [f"{prefix}-orig"]

        again = ok(run_playbook(playbook, home, inventory, "--diff"), hosts=1)
        assert changed(again) == {"libvirt": 0}
        assert passphrase not in checked.output + first.output + again.output
    finally:
        remove_named(platform, prefix)


@pytest.mark.timeout(600)
def test_migrate_across_platforms_libvirt_to_vsphere(
    libvirt_daemon: LibvirtDaemon, vcsim_vcenter: Vcsim, tmp_path: Path
) -> None:
    prefix = f"ans-{uuid.uuid4().hex[:6]}"
    home = tmp_path / "home"
    source = {"anyvirt_uri": libvirt_daemon.anyvirt_uri}
    target = {"anyvirt_uri": vcsim_vcenter.anyvirt_uri_with_ca, "anyvirt_password": vcsim_vcenter.password}
    inventory = local_inventory(
        home,
        {
            "libvirt": {
                **source,
                "prefix": prefix,
                "to_uri": target["anyvirt_uri"],
                "to_password": target["anyvirt_password"],
            }
        },
    )
    playbook = role_playbook(tmp_path, "anyvirt_migrate_across")
    try:
        checked = ok(run_playbook(playbook, home, inventory, "--check", "--diff"), hosts=1)
        assert changed(checked) == {"libvirt": 2}  # the VM, and its move
        assert names_on(source, prefix) == {} and names_on(target, prefix) == {}

        first = ok(run_playbook(playbook, home, inventory, "--diff"), hosts=1)
        assert changed(first) == {"libvirt": 2}
        assert sorted(names_on(source, prefix)) == [f"{prefix}-mover"]  # the source is kept
        moved = names_on(target, prefix)
        assert sorted(moved) == [f"{prefix}-moved"] and moved[f"{prefix}-moved"].memory_mib == 32

        assert changed(ok(run_playbook(playbook, home, inventory), hosts=1)) == {"libvirt": 0}
        assert names_on(target, prefix) == moved
    finally:
        remove_named(source, prefix)
        remove_named(target, prefix)


def two_nodes_of_a_cluster(platform: dict[str, Any]) -> dict[str, str]:
    """``from_node`` and ``to_node``: two online nodes of one cluster of the platform."""
    with anyvirt.connect(platform["anyvirt_uri"], password=platform.get("anyvirt_password")) as host:
        by_cluster: dict[str | None, list[str]] = {}
        for node in host.nodes.list():
            if node.state == "online" and not node.maintenance:
                by_cluster.setdefault(node.info.cluster, []).append(node.name)
    pair = next(sorted(names)[:2] for names in by_cluster.values() if len(names) >= 2)
    return {"from_node": pair[0], "to_node": pair[1]}


def node_names(platform: dict[str, Any], prefix: str) -> dict[str, str | None]:
    with anyvirt.connect(platform["anyvirt_uri"], password=platform.get("anyvirt_password")) as host:
        names = {node.id: node.name for node in host.nodes.list()}
        return {vm.name: names.get(vm.node or "", vm.node) for vm in host.vms.list()
                if vm.name.startswith(prefix)}


# vcsim moves a VM between the hosts of its cluster; fakepve's migration answers a made-up
# precheck that this process cannot replace (the modules run in processes of their own)
@pytest.mark.timeout(600)
def test_migrate_within_a_cluster_on_vsphere(vcsim_vcenter: Vcsim, tmp_path: Path) -> None:
    prefix = f"ans-{uuid.uuid4().hex[:6]}"
    home = tmp_path / "home"
    platform = {"anyvirt_uri": vcsim_vcenter.anyvirt_uri_with_ca, "anyvirt_password": vcsim_vcenter.password}
    nodes = two_nodes_of_a_cluster(platform)
    inventory = local_inventory(home, {"vsphere": {**platform, **nodes, "prefix": prefix}})
    playbook = role_playbook(tmp_path, "anyvirt_migrate_within")
    roamer = f"{prefix}-roamer"
    try:
        checked = ok(run_playbook(playbook, home, inventory, "--check", "--diff"), hosts=1)
        assert changed(checked) == {"vsphere": 2}  # the VM, and its move
        assert node_names(platform, prefix) == {}

        first = ok(run_playbook(playbook, home, inventory, "--diff"), hosts=1)
        assert changed(first) == {"vsphere": 2}
        assert node_names(platform, prefix) == {roamer: nodes["to_node"]}

        assert changed(ok(run_playbook(playbook, home, inventory), hosts=1)) == {"vsphere": 0}
        assert node_names(platform, prefix) == {roamer: nodes["to_node"]}
    finally:
        remove_named(platform, prefix)
