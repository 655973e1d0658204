"""``anyvirt recover``: asks first, refuses a host that answers, reports per VM (text and JSON)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import run

import anyvirt
from anyvirt import memory
from anyvirt.cli.commands_recover import as_dict, print_recovery
from anyvirt.cli.exit_codes import ExitCode
from anyvirt.recovery import RecoveredFrom, Recovery, RecoveryResult

DEAD = "libvirt+qemu+unix:///system?socket=/nonexistent/anyvirt-dead-sock"


@pytest.fixture
def uri() -> Iterator[str]:
    name = f"clirec-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    memory.reset(name)


def test_it_asks_first_and_a_no_changes_nothing(uri: str, tmp_path: Path) -> None:
    result = run("recover", "--failed", DEAD, "--to", uri, "--from", str(tmp_path / "repo"), stdin="n\n")
    assert result.exit_code == 1 and "make sure it is down" in result.output
    assert "aborted: nothing was changed" in result.output
    assert not (tmp_path / "repo").exists()


def test_a_failed_host_that_answers_is_a_conflict(uri: str) -> None:
    with anyvirt.connect(uri):
        result = run("recover", "--failed", uri.replace("clirec", "clirec-alive"), "--to", uri, "--yes")
    assert result.exit_code == ExitCode.CONFLICT, result.output
    assert "still answers" in result.stderr


def test_nothing_known_is_not_found_in_json_too(uri: str, tmp_path: Path) -> None:
    result = run("--json", "recover", "--failed", DEAD, "--to", uri, "--from", str(tmp_path / "repo"))
    assert result.exit_code == ExitCode.NOT_FOUND, result.output
    assert "nothing of" in result.output + result.stderr


def test_the_report_says_where_each_vm_came_from_and_what_was_lost(
        capsys: pytest.CaptureFixture[str]) -> None:
    recovery = Recovery([
        RecoveryResult("web1", "id-1", RecoveredFrom.SHARED_STORAGE, elapsed=1.5),
        RecoveryResult("db1", "id-2", RecoveredFrom.RESTORE_POINT, data_age=dt.timedelta(hours=3),
                       elapsed=4.0),
        RecoveryResult("old", "id-3", RecoveredFrom.NOT_RECOVERED, reason="no restore point", elapsed=4.1),
    ], elapsed=4.2)
    body = json.loads(json.dumps(as_dict(recovery)))
    assert body["elapsed_s"] == 4.2
    assert [(v["name"], v["outcome"], v["data_age_s"]) for v in body["vms"]] == [
        ("web1", "shared-storage", None), ("db1", "restore-point", 10800.0), ("old", "not-recovered", None)]
    print_recovery(recovery)
    shown = capsys.readouterr().out
    assert "nothing lost" in shown and "3.0 h old" in shown and "no restore point" in shown
    assert "2 of 3 VM(s) recovered in 4.2 s" in shown
