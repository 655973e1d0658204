"""The ``anyvirt`` command against memory:// hosts, in process (memory state is per process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from cli_support import run, run_json

import anyvirt
from anyvirt import Capability, VMSpec, memory, registry
from anyvirt.cli.exit_codes import ExitCode


@pytest.fixture
def uri() -> Iterator[str]:
    name = f"clitest-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    memory.reset(name)


@pytest.fixture
def host(uri: str) -> Iterator[anyvirt.Host]:
    with anyvirt.connect(uri) as connected:
        yield connected


# -- listing and output ----------------------------------------------------------


def test_vms_lists_a_vm_created_through_the_api(uri: str, host: anyvirt.Host) -> None:
    vm = host.vms.create(VMSpec(name="web1", cpus=2, memory_mib=1024))
    result = run("vms", uri)
    assert result.exit_code == 0, result.output
    assert "web1" in result.stdout
    assert vm.id not in result.stdout  # ids in --json and `vm show`; tables say names
    assert "stopped" in result.stdout


def test_vms_json_has_ids_names_and_states(uri: str, host: anyvirt.Host) -> None:
    a = host.vms.create(VMSpec(name="a"))
    b = host.vms.create(VMSpec(name="b", cpus=3))
    b.start()
    listed = run_json("vms", uri)
    assert isinstance(listed, list)
    by_name = {item["name"]: item for item in listed}
    assert by_name["a"]["id"] == a.id
    assert by_name["a"]["state"] == "stopped"
    assert by_name["b"]["state"] == "running"
    assert by_name["b"]["cpus"] == 3


def test_json_flag_after_the_command_works_too(uri: str, host: anyvirt.Host) -> None:
    host.vms.create(VMSpec(name="x"))
    result = run("vms", uri, "--json")
    assert result.exit_code == 0
    assert [item["name"] for item in json.loads(result.stdout)] == ["x"]


def test_info_json_reports_allocation(uri: str, host: anyvirt.Host) -> None:
    host.vms.create(VMSpec(name="x", cpus=4, memory_mib=2048))
    data = run_json("info", uri)
    assert isinstance(data, dict)
    assert data["uri"] == uri
    assert data["info"]["allocation"]["vcpus"] == 4
    assert data["info"]["allocation"]["memory_mib"] == 2048


def test_uri_can_come_from_the_environment(uri: str, host: anyvirt.Host) -> None:
    host.vms.create(VMSpec(name="from-env"))
    result = run("--json", "vm", "show", "from-env", env={"ANYVIRT_URI": uri})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "from-env"


# -- a VM's life through the CLI ---------------------------------------------------


def test_lifecycle_create_start_snapshot_clone_delete(uri: str, host: anyvirt.Host) -> None:
    made = run_json("vm", "create", uri, "db", "--cpus", "2", "--memory", "1024", "--disk-gib", "1",
                    "--network", "default")
    assert isinstance(made, dict)
    assert made["state"] == "stopped"
    assert run_json("vm", "start", uri, "db")["state"] == "running"
    snap = run_json("snapshot", "create", uri, "db", "first", "--memory", "--description", "before")
    assert snap["memory"] is True
    run_json("snapshot", "create", uri, "db", "second")
    tree = run("snapshot", "list", uri, "db")
    assert tree.exit_code == 0
    lines = tree.stdout.splitlines()
    second = next(line for line in lines if "second" in line)
    assert "current" in second
    assert lines.index(second) > next(i for i, line in enumerate(lines) if "first" in line)
    reverted = run_json("snapshot", "revert", uri, "db", "first")
    assert reverted["snapshot"]["name"] == "first"
    listed = run_json("snapshot", "list", uri, "db")
    assert {s["name"]: s["current"] for s in listed} == {"first": True, "second": False}
    run_json("snapshot", "delete", uri, "db", "first", "--children")
    assert run_json("snapshot", "list", uri, "db") == []
    clone = run_json("vm", "clone", uri, "db", "db2", "--linked")
    assert clone["name"] == "db2"
    assert run_json("vm", "stop", uri, "db", "--force")["state"] == "stopped"
    run_json("vm", "delete", uri, "db2")
    run_json("vm", "delete", uri, "db")
    assert host.vms.list() == []


def test_migrate_to_another_node(uri: str, host: anyvirt.Host) -> None:
    vm = host.vms.create(VMSpec(name="mover"))
    other = next(n for n in host.nodes.list() if n.id != vm.node)
    result = run_json("vm", "migrate", uri, "mover", "--node", other.name)
    assert str(result["target"]).endswith(other.name)
    assert result["live"] is False
    assert vm.refresh().node == other.id


def test_names_are_printed_literally_not_as_markup(uri: str, host: anyvirt.Host) -> None:
    vm = host.vms.create(VMSpec(name="[red]x[/bogus]"))
    vm.snapshots.create("[/]snap", description="[b]note")
    listed = run("vms", uri)
    assert listed.exit_code == 0
    assert "[red]x[/bogus]" in listed.stdout
    tree = run("snapshot", "list", uri, vm.id)
    assert tree.exit_code == 0
    assert "[/]snap" in tree.stdout
    assert "[b]note" in tree.stdout
    started = run("vm", "start", uri, vm.id)
    assert started.stdout.startswith("[red]x[/bogus]: started")


def test_migrate_to_another_host_of_the_same_backend(uri: str, host: anyvirt.Host) -> None:
    vm = host.vms.create(VMSpec(name="traveller"))
    vm.start()
    other = f"memory://clitest-dest-{uuid.uuid4().hex[:6]}"
    try:
        result = run_json("vm", "migrate", uri, "traveller", "--to-host", other)
        assert result["live"] is True
        with anyvirt.connect(other) as dest:
            assert [v.name for v in dest.vms.list()] == ["traveller"]
        assert host.vms.list() == []
    finally:
        memory.reset(other.removeprefix("memory://"))


def test_migrate_needs_one_destination(uri: str, host: anyvirt.Host) -> None:
    host.vms.create(VMSpec(name="stay"))
    assert run("vm", "migrate", uri, "stay").exit_code == 2
    assert run("vm", "migrate", uri, "stay", "--node", "node1", "--to-host", uri).exit_code == 2


# -- exit codes ----------------------------------------------------------------------


def test_unknown_vm_exits_3(uri: str) -> None:
    result = run("vm", "start", uri, "no-such-vm")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: ")
    assert "no-such-vm" in result.stderr
    assert "Traceback" not in result.output


def test_bad_uri_exits_2(uri: str) -> None:
    assert run("vms", "not-a-uri").exit_code == 2
    assert run("vms", "nosuchbackend://x").exit_code == 2


def test_bad_input_exits_2(uri: str) -> None:
    result = run("vm", "create", uri, " padded ")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "white space" in result.stderr


def test_wrong_argument_count_is_a_usage_error(uri: str) -> None:
    assert run("vm", "start", uri, "a", "b").exit_code == 2


def test_pausing_a_stopped_vm_exits_4(uri: str, host: anyvirt.Host) -> None:
    host.vms.create(VMSpec(name="idle"))
    result = run("vm", "pause", uri, "idle")
    assert result.exit_code == 4
    assert "stopped" in result.stderr


def test_creating_a_taken_name_exits_4(uri: str, host: anyvirt.Host) -> None:
    host.vms.create(VMSpec(name="taken"))
    assert run("vm", "create", uri, "taken").exit_code == ExitCode.CONFLICT


def test_a_wait_past_its_timeout_exits_7() -> None:
    name = f"clitest-slow-{uuid.uuid4().hex[:6]}"
    try:
        with anyvirt.connect(f"memory://{name}?latency=2") as host:
            host.vms.create(VMSpec(name="slow"), timeout=30)
        result = run("vm", "start", f"memory://{name}", "slow", "--timeout", "0.2")
    finally:
        memory.reset(name)
    assert result.exit_code == 7
    assert result.stderr.startswith("error: ")


def test_unreachable_platform_exits_6() -> None:
    # nothing listens on port 1: the connection is refused at once
    result = run("--timeout", "5", "vms", "vsphere://user@127.0.0.1:1?verify=false",
                 env={"ANYVIRT_PASSWORD": "unused"})
    assert result.exit_code == 6, result.output
    assert "unused" not in result.output + result.stderr


def test_profile_gives_the_uri(uri: str, host: anyvirt.Host, tmp_path: Path) -> None:
    host.vms.create(VMSpec(name="profiled"))
    config = tmp_path / "config.toml"
    config.write_text(f'[profiles.lab]\nuri = "{uri}"\n', encoding="utf-8")
    result = run("--json", "--profile", "lab", "vms", env={"ANYVIRT_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert [vm["name"] for vm in json.loads(result.stdout)] == ["profiled"]
    missing = run("--profile", "nope", "vms", env={"ANYVIRT_CONFIG": str(config)})
    assert missing.exit_code == 3


class LimitedDriver(memory.MemoryDriver):
    """A memory host that can only create, start and stop: no snapshots, no pause."""

    backend = "limited"
    platform = "memory, cut down (test)"
    possible_capabilities = frozenset(
        {Capability.VM_CREATE, Capability.VM_DELETE, Capability.START, Capability.STOP,
         Capability.POWER_OFF}
    )


@pytest.fixture
def limited_uri() -> Iterator[str]:
    registry.register("limited", LimitedDriver)
    name = f"limited-{uuid.uuid4().hex[:8]}"
    yield f"limited://{name}"
    memory.reset(name)


def test_unsupported_capability_exits_5(limited_uri: str) -> None:
    with anyvirt.connect(limited_uri) as host:
        host.vms.create(VMSpec(name="plain")).start()
    result = run("snapshot", "create", limited_uri, "plain", "s1")
    assert result.exit_code == 5
    assert "does not support snapshot" in result.stderr
    assert run("vm", "pause", limited_uri, "plain").exit_code == 5


def test_capabilities_of_a_connection(limited_uri: str) -> None:
    data = run_json("capabilities", limited_uri)
    assert isinstance(data, dict)
    assert data["backend"] == "limited"
    assert "vm.start" in data["capabilities"]
    assert "snapshot" not in data["capabilities"]


def test_capabilities_all_lists_every_installed_backend() -> None:
    data = run_json("capabilities", "--all")
    assert isinstance(data, dict)
    assert "memory" in data
    from anyvirt.memory import MemoryDriver

    assert sorted(data["memory"]) == sorted(c.value for c in MemoryDriver.possible_capabilities)
    assert "disk.changed_blocks" not in data["memory"]  # it keeps disks as bytes: no change record


def test_backends_lists_memory() -> None:
    entries = run_json("backends")
    assert isinstance(entries, list)
    mem = next(e for e in entries if e["scheme"] == "memory")
    assert mem["loadable"] is True
    assert mem["backend"] == "memory"


# -- secrets ---------------------------------------------------------------------


def test_password_from_env_never_printed(uri: str, host: anyvirt.Host) -> None:
    password = "s3cret-" + uuid.uuid4().hex
    host.vms.create(VMSpec(name="guarded"))
    env = {"AV_TEST_PASSWORD": password}
    with_user = uri.replace("memory://", "memory://admin@")
    for args in (
        ("--json", "--password-env", "AV_TEST_PASSWORD", "vms", with_user),
        ("--json", "--password-env", "AV_TEST_PASSWORD", "info", with_user),
        ("--json", "--password-env", "AV_TEST_PASSWORD", "vm", "start", with_user, "missing"),
        ("--debug", "--password-env", "AV_TEST_PASSWORD", "vm", "pause", with_user, "guarded"),
    ):
        result = run(*args, env=env)
        assert password not in result.output
        assert password not in result.stderr


def test_password_in_the_uri_is_not_echoed(uri: str) -> None:
    password = "pw-" + uuid.uuid4().hex
    secret_uri = uri.replace("memory://", f"memory://admin:{password}@")
    for args in (("--json", "info", secret_uri), ("vm", "start", secret_uri, "missing"),
                 ("vm", "start", secret_uri, "a", "b")):
        result = run(*args)
        assert password not in result.output
        assert password not in result.stderr


def test_missing_password_variable_is_a_usage_error(uri: str) -> None:
    result = run("--password-env", "AV_NOT_SET_ANYWHERE", "vms", uri)
    assert result.exit_code == 2
    assert "AV_NOT_SET_ANYWHERE" in result.output + result.stderr


def test_help_documents_exit_codes() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for code in ExitCode:
        assert f"  {int(code)}  " in result.stdout


# -- testbeds: real processes, stopped by SIGTERM ----------------------------------


def _start_testbed(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Run ``anyvirt --json testbed ...`` and read the JSON document it prints once up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "anyvirt.cli.main", "--json", "testbed", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.rstrip() == "}":
            return proc, json.loads("".join(lines))
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"testbed printed no URI: {''.join(lines)} {err}")


def _stop_testbed(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def test_testbed_libvirt_serves_until_sigterm() -> None:
    proc, data = _start_testbed("libvirt", "--count", "1")
    try:
        [uri] = data["uris"]
        assert uri.startswith("libvirt+qemu+unix:///system?socket=")
        socket_path = Path(unquote(uri.split("socket=", 1)[1]))
        assert socket_path.exists()
        with anyvirt.connect(uri) as host:
            assert host.backend == "libvirt"
            assert host.info().cpus >= 1
    finally:
        err = _stop_testbed(proc)
    assert "stopped" in err
    assert not socket_path.exists()


def test_testbed_vsphere_prints_uri_and_password() -> None:
    proc, data = _start_testbed("vsphere", "--vms", "1")
    try:
        [uri] = data["uris"]
        password = data["environment"]["ANYVIRT_PASSWORD"]
        assert uri.startswith("vsphere://")
        assert password not in uri
        with anyvirt.connect(uri, password=password) as vc:
            assert vc.backend == "vsphere"
            assert len(vc.nodes.list()) >= 1
    finally:
        _stop_testbed(proc)


def test_progress_bar_follows_a_real_task(capsys: pytest.CaptureFixture[str]) -> None:
    from anyvirt.cli.progress import progress_bar

    name = f"clitest-progress-{uuid.uuid4().hex[:6]}"
    seen: list[float | None] = []
    try:
        with anyvirt.connect(f"memory://{name}?latency=0.05") as host:
            vm = host.vms.create(VMSpec(name="slow"))
            with progress_bar("start slow", enabled=True) as on_progress:
                assert on_progress is not None

                def watch(task: anyvirt.Task[Any]) -> None:
                    seen.append(task.progress)
                    on_progress(task)

                vm.start(on_progress=watch)
    finally:
        memory.reset(name)
    assert seen[-1] == 100.0
    assert len(seen) > 2
    assert capsys.readouterr().out == ""  # bars go to stderr only


def test_no_progress_bar_when_not_wanted() -> None:
    from anyvirt.cli.progress import progress_bar, wanted

    assert wanted(json_mode=True) is False
    with progress_bar("x", enabled=False) as on_progress:
        assert on_progress is None


def test_cli_start_up_imports_no_platform_sdk() -> None:
    probe = (
        "import sys, anyvirt.cli.main\n"
        "sdks = ('libvirt', 'pyVmomi', 'pyVim', 'anyvirt_libvirt', 'anyvirt_vsphere')\n"
        "print([m for m in sys.modules if m.split('.')[0] in sdks or m.startswith('anyvirt.testing')])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
