"""``anyvirt node recover``: confirmation, --fenced, --json, and the exit code, on memory://."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from cli_support import run

import anyvirt
from anyvirt import DiskSpec, PowerState, VMSpec, memory
from anyvirt.cli.exit_codes import ExitCode


@pytest.fixture
def name() -> Iterator[str]:
    chosen = f"clirecover-{uuid.uuid4().hex[:8]}"
    yield chosen
    memory.reset(chosen)


@pytest.fixture
def host(name: str) -> Iterator[anyvirt.Host]:
    with anyvirt.connect(f"memory://{name}") as connected:
        connected.vms.create(VMSpec(name="web", cpus=1, memory_mib=256, node="node1")).start()
        yield connected


def test_a_node_that_answers_is_refused_with_the_cli_hint(name: str, host: anyvirt.Host) -> None:
    result = run("node", "recover", f"memory://{name}", "node1", "--yes")
    assert result.exit_code == ExitCode.CONFLICT
    assert "`anyvirt node evacuate`" in result.output


def test_unproven_failure_asks_for_fenced_and_a_no_changes_nothing(
        name: str, host: anyvirt.Host) -> None:
    memory.fail_node(name, "node1", proven=False)
    refused = run("node", "recover", f"memory://{name}", "node1", "--yes")
    assert refused.exit_code == ExitCode.CONFLICT and "--fenced" in refused.output
    declined = run("node", "recover", f"memory://{name}", "node1", "--fenced", stdin="n\n")
    assert "web (running)" in declined.output and "Recover them?" in declined.output
    assert declined.exit_code != 0
    assert host.vms.get("web").node == "node1"


def test_json_reports_each_vm_and_exit_code_says_one_was_lost(name: str, host: anyvirt.Host) -> None:
    host.vms.create(VMSpec(name="local", cpus=1, memory_mib=256, node="node1",
                           disks=[DiskSpec(size_gib=1, storage="local")]))
    memory.fail_node(name, "node1")
    result = run("--json", "node", "recover", f"memory://{name}", "node1")
    assert result.exit_code == ExitCode.FAILURE, result.output
    report = json.loads(result.stdout)
    by_name = {vm["name"]: vm for vm in report["vms"]}
    assert by_name["web"]["outcome"] == "shared-storage"
    assert by_name["web"]["node"] == "node2" and by_name["web"]["state"] == "running"
    assert by_name["local"]["outcome"] == "not-recovered" and "local" in by_name["local"]["reason"]
    assert report["elapsed"] >= 0
    assert host.vms.get("web").state is PowerState.RUNNING
