"""``anyvirt events`` and ``anyvirt vms --watch`` on the memory backend."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import anyvirt
from anyvirt import VMSpec, memory
from anyvirt.cli.main import cli


@pytest.fixture
def uri() -> Iterator[str]:
    name = f"cliwatch-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    memory.reset(name)


def changes_soon(uri: str) -> threading.Thread:
    """Another connection changes the host once the command is watching."""

    def act() -> None:
        time.sleep(0.5)
        with anyvirt.connect(uri) as other:
            vm = other.vms.get("web")
            vm.start()
            other.vms.create(VMSpec(name="db", cpus=1, memory_mib=128))
            vm.reconfigure(cpus=2)

    thread = threading.Thread(target=act)
    thread.start()
    return thread


def test_events_json_prints_one_object_per_line(uri: str) -> None:
    with anyvirt.connect(uri) as host:
        host.vms.create(VMSpec(name="web", cpus=1, memory_mib=64))
    actor = changes_soon(uri)
    result = CliRunner().invoke(cli, ["events", uri, "--json", "--count", "3"])
    actor.join()
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["kind"], o["name"], o["fields"]) for o in lines] == [
        ("changed", "web", ["state"]), ("added", "db", []), ("changed", "web", ["cpus"])]
    assert lines[0]["old"]["state"] == "stopped" and lines[0]["new"]["state"] == "running"


def test_vms_watch_off_a_terminal_prints_a_line_per_change(uri: str) -> None:
    with anyvirt.connect(uri) as host:
        host.vms.create(VMSpec(name="web", cpus=1, memory_mib=64))
    actor = changes_soon(uri)
    result = CliRunner().invoke(cli, ["vms", uri, "--watch", "--count", "3"])
    actor.join()
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "changed web: state stopped -> running", "added db", "changed web: cpus 1 -> 2"]
