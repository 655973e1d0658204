"""examples/tour.py on memory:// targets, in process (memory hosts live in this process)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import anyvirt
from anyvirt import DiskSpec, Firmware, PowerState, VMSpec, memory

TOUR_PATH = Path(__file__).resolve().parents[1] / "examples" / "tour.py"


@pytest.fixture(scope="module")
def tour() -> ModuleType:
    spec = importlib.util.spec_from_file_location("anyvirt_example_tour", TOUR_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _fresh_tour_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANYVIRT_TOUR_URIS", raising=False)
    memory.reset("tour")


def _tour_vms() -> list[str]:
    with anyvirt.connect("memory://tour") as host:
        return [vm.name for vm in host.vms.list() if vm.name.startswith("tour-")]


def test_tour_passes_on_memory_and_shows_every_step(
    tour: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tour.main(["--no-default"]) == 0
    out = capsys.readouterr().out
    assert "memory://tour" in out
    for step in tour.STEPS:
        assert step in out
    assert "failed" not in out
    assert "live to node" in out  # memory:// has two nodes: the VM really moved
    assert _tour_vms() == []


def test_every_step_is_ok_on_memory(tour: ModuleType) -> None:
    result = tour.Tour("memory://tour", lambda: None, 30.0).run()
    assert {step: cell.outcome for step, cell in result.cells.items()} == dict.fromkeys(tour.STEPS, "ok")


def _kib(figure: str, unit: str) -> float:
    return float(figure) * (1024 if unit == "MiB" else 1)


#: the repository cell: its second point, its kind and what it read and stored
SECOND_POINT = re.compile(r"2 points; the second (incremental|full): "
                          r"read (\d+) (KiB|MiB) of (\d+) (KiB|MiB), stored (\d+) (KiB|MiB); verified")


def second_point(detail: str) -> tuple[str, float, float, float]:
    """The repository cell's second point: kind, KiB read, KiB of disk, KiB stored."""
    found = SECOND_POINT.fullmatch(detail)
    assert found, detail
    kind, read, read_unit, whole, whole_unit, stored, stored_unit = found.groups()
    return kind, _kib(read, read_unit), _kib(whole, whole_unit), _kib(stored, stored_unit)


def test_the_new_steps_show_what_memory_does(tour: ModuleType) -> None:
    t = tour.Tour("memory://tour", lambda: None, 30.0)
    cells = t.run().cells
    # memory://'s console echoes what is typed: the tour's own line comes back
    assert cells["console"].detail == (f"21 bytes; first line 'anyvirt-tour-{t.tag}', "
                                       "our input, echoed")
    kind, _read, whole, stored = second_point(cells["repository"].detail)
    assert kind == "incremental" and whole == 64 * 1024 and stored < whole
    # node1 held only the tour's VM made for the step: it failed, the VM came back on node2
    recovered = re.fullmatch(rf"node1 down \(simulated\); tour-{t.tag}-rec shared-storage to node2 "
                             r"in [\d.]+ s; whole recovery [\d.]+ s", cells["recover"].detail)
    assert recovered, cells["recover"].detail
    with anyvirt.connect("memory://tour") as host:
        assert {n.name: n.state for n in host.nodes.list()} == {"node1": "online", "node2": "online"}
    assert _tour_vms() == []


def test_recover_fails_no_node_that_holds_vms_the_tour_did_not_make(tour: ModuleType) -> None:
    with anyvirt.connect("memory://tour") as host:
        others = [host.vms.create(VMSpec(name=f"someone-{n}", cpus=1, memory_mib=64, node=n))
                  for n in ("node1", "node2")]
        for vm in others:
            vm.start()
        cell = tour.Tour("memory://tour", lambda: None, 30.0).run().cells["recover"]
        assert (cell.outcome, cell.detail) == ("skipped", "every node holds VMs of others")
        for vm, node in zip(others, ("node1", "node2"), strict=True):
            vm.refresh()
            assert (vm.node, vm.state) == (node, PowerState.RUNNING)
        assert {n.state for n in host.nodes.list()} == {"online"}


def test_a_failed_step_fails_the_tour_and_still_cleans_up(
    tour: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    memory.inject_failure("tour", "clone_vm", anyvirt.TaskFailed("injected clone failure"))
    assert tour.main(["--no-default"]) == 1
    out = capsys.readouterr().out
    assert "failed: injected clone failure" in out
    assert _tour_vms() == []


def test_missing_capabilities_are_reported_not_failed(
    tour: ModuleType, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    limited = ("memory://tour-limited?without=snapshot,snapshot.memory,migration.live,migration.cold,"
               "vm.console,node.recover")
    monkeypatch.setenv("ANYVIRT_TOUR_URIS", limited)
    try:
        assert tour.main(["--no-default", "--json"]) == 0
    finally:
        memory.reset("tour-limited")
    cells = _tour_json(capsys.readouterr().out)["memory://tour-limited"]["cells"]
    for step, capability in (("snapshot", "snapshot"), ("migrate", "migration.live"),
                             ("console", "vm.console"), ("recover", "node.recover")):
        assert (cells[step]["outcome"], cells[step]["detail"]) == ("not supported", capability)


def test_unreachable_targets_are_reported_not_failed(
    tour: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tour.main(["--no-default", "nosuchbackend://user:hunter2@somewhere"]) == 0
    out = capsys.readouterr().out
    assert "unreachable" in out
    assert "hunter2" not in out


# -- the tour as a newcomer runs it: scripts/tour.sh, in a subprocess ---------------------

REPO = TOUR_PATH.parents[1]

#: A machine that has never run the tests, simulated in a private mount namespace: /etc
#: without the QEMU accounts (only the test fixtures and Debian's libvirt-daemon-system
#: create them), a /dev without /dev/kvm (QEMU must fall back to TCG), a fresh
#: $XDG_DATA_HOME (no embed root, no capability cache). Nothing outside the namespace changes.
FRESH_MACHINE = r"""
set -euo pipefail
work=$1
cp -a /etc "$work/etc"
sed -i '/^libvirt-qemu:/d' "$work/etc/passwd" "$work/etc/shadow"
sed -i -E '/^(kvm|libvirt-qemu):/d' "$work/etc/group" "$work/etc/gshadow"
mount --bind "$work/etc" /etc
mkdir "$work/dev"
mount -t tmpfs -o mode=755 devcopy "$work/dev"
cp -a /dev/. "$work/dev/" 2>/dev/null || true
rm -f "$work/dev/kvm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$work/dev/pts"
ln -sf pts/ptmx "$work/dev/ptmx"
mount -t tmpfs -o mode=1777 shm "$work/dev/shm"
# libvirt moves each mount under /dev into QEMU's own namespace: no hidden duplicates
for m in $(findmnt -rn -o TARGET | grep '^/dev/' | sort -r); do umount -l "$m"; done
mount --move "$work/dev" /dev
export XDG_DATA_HOME="$work/data"
if getent passwd libvirt-qemu >/dev/null || [ -e /dev/kvm ]; then
  echo "the simulation of a fresh machine did not take" >&2; exit 99
fi
bash scripts/tour.sh --json
getent passwd libvirt-qemu >/dev/null && echo "accounts: created" >&2
"""


def _tour_json(stdout: str) -> dict[str, Any]:
    return {result["target"]: result for result in json.loads(stdout)}


def _outcomes(result: dict[str, Any]) -> dict[str, str]:
    return {step: cell["outcome"] for step, cell in result["cells"].items()}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYVIRT_")}
    env.update(extra)
    return env


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root (CI runs as root)")
def test_tour_sh_runs_the_local_qemu_on_a_fresh_machine_without_kvm() -> None:
    # a short path: QEMU's monitor sockets live under the embed root (108-byte socket paths)
    work = tempfile.mkdtemp(prefix="av-fresh-")
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", FRESH_MACHINE, "fresh",
             work],
            cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=300,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accounts: created" in done.stderr
    results = _tour_json(done.stdout)
    local = [r for label, r in results.items() if label.startswith("libvirt+qemu:///embed")]
    assert len(local) == 1, list(results)
    outcomes = _outcomes(local[0])
    # the embedded QEMU has one node: nothing to migrate to; every other step really ran
    assert outcomes.pop("migrate") == "not supported"
    # the embedded QEMU has no storage pool for a seed volume: identity says so, by name
    assert outcomes.pop("identity") == "not supported"
    assert "identity" in local[0]["cells"]["identity"]["detail"]
    assert outcomes.pop("recover") == "not supported"  # one host, no cluster to recover within
    assert outcomes == dict.fromkeys(outcomes, "ok"), local[0]["cells"]
    assert "QEMU (qemu)" in local[0]["cells"]["info"]["detail"]  # TCG: no /dev/kvm
    assert local[0]["cells"]["create"]["detail"] == "boot-sector guest"  # a guest that really boots
    cells = local[0]["cells"]
    _assert_the_demo_guest_wrote(cells)
    # the local QEMU tracks changed blocks: nothing changed between the two points, so the
    # second read less than the disk
    kind, read, whole, _stored = second_point(cells["repository"]["detail"])
    assert kind == "incremental" and read < whole, cells["repository"]


def _assert_the_demo_guest_wrote(cells: dict[str, Any]) -> None:
    """The demo guest's own first line on its console, not the tour's typed line echoed."""
    assert cells["console"]["detail"].endswith("first line 'ANYVIRT-GUEST-UP', not our input")


def test_tour_passes_on_the_vsphere_testbed_and_says_why_stop_was_forced(vcsim_vcenter: Any) -> None:
    done = subprocess.run(
        [sys.executable, str(TOUR_PATH), "--no-default", "--json", vcsim_vcenter.anyvirt_uri],
        env=_clean_env(ANYVIRT_PASSWORD=vcsim_vcenter.password), capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (vsphere,) = [r for label, r in _tour_json(done.stdout).items() if label.startswith("vsphere://")]
    outcomes = _outcomes(vsphere)
    # vcsim's guests have no VMware Tools: graceful stop is refused, and the cell says so in full
    assert outcomes.pop("stop") == "forced"
    assert "VMware Tools" in vsphere["cells"]["stop"]["detail"]
    assert outcomes.pop("console") == "not supported"  # no serial line anyvirt can reach
    # a vCenter recovers a failed host's VMs, but a tour never fails a host to show it
    assert (outcomes.pop("recover"), vsphere["cells"]["recover"]["detail"]) == (
        "skipped", "a tour never fails a real node (docs/recovery.md)")
    assert outcomes == dict.fromkeys(outcomes, "ok"), vsphere["cells"]


def test_tour_passes_on_the_libvirt_testbed(libvirt_daemon: Any) -> None:
    done = subprocess.run(
        [sys.executable, str(TOUR_PATH), "--no-default", "--json", libvirt_daemon.anyvirt_uri],
        env=_clean_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = [r for label, r in _tour_json(done.stdout).items() if label.startswith("libvirt+")]
    outcomes = _outcomes(result)
    assert outcomes.pop("migrate") in ("ok", "skipped")  # one daemon: no second node
    assert outcomes.pop("recover") == "not supported"  # one host, no cluster to recover within
    assert outcomes == dict.fromkeys(outcomes, "ok"), result["cells"]
    _assert_the_demo_guest_wrote(result["cells"])
    assert second_point(result["cells"]["repository"]["detail"])[0] == "incremental"


def test_tour_passes_on_the_proxmox_testbed_and_names_what_it_cannot_do(proxmox_testbed: Any) -> None:
    done = subprocess.run(
        [sys.executable, str(TOUR_PATH), "--no-default", "--json", proxmox_testbed.uri],
        env=_clean_env(ANYVIRT_PASSWORD=proxmox_testbed.password), capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = [r for label, r in _tour_json(done.stdout).items() if label.startswith("proxmox://")]
    outcomes = _outcomes(result)
    unsupported = {step for step, outcome in outcomes.items() if outcome == "not supported"}
    assert all(result["cells"][step]["detail"] for step in unsupported)  # each says what is missing
    # PVE's cluster reports what its HA does of a failed node, but a tour never fails a node
    assert (outcomes.pop("recover"), result["cells"]["recover"]["detail"]) == (
        "skipped", "a tour never fails a real node (docs/recovery.md)")
    # PVE's terminal proxy greets first, then echoes
    assert result["cells"]["console"]["detail"].endswith(
        "first line 'starting serial terminal on interface serial0', not our input")
    assert {o for step, o in outcomes.items() if step not in unsupported} == {"ok"}, result["cells"]
    assert {"create", "start", "snapshot", "stop", "clone", "delete"} <= set(outcomes) - unsupported


def test_the_move_cell_names_its_warnings(tour: ModuleType) -> None:
    """The cell says which warnings, not "1 warning": the reader must know what to check."""
    a, b = anyvirt.connect("memory://tour-warned-a"), anyvirt.connect("memory://tour-warned-b")
    try:
        vm = a.vms.create(VMSpec(name="warned", disks=[DiskSpec(size_gib=0.001)],
                                 firmware=Firmware.EFI))
        vm.snapshots.create("s1")
        warnings = [str(w) for w in anyvirt.plan_migration(vm, to=b).warnings]
        assert tour.warnings_named(warnings) == "2 warnings: efi-state-lost, snapshots-dropped"
        assert tour.warnings_named([]) == "no warnings"
    finally:
        memory.reset("tour-warned-a")
        memory.reset("tour-warned-b")
