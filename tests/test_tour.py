"""examples/tour.py on memory:// targets, in process (memory hosts live in this process)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

import anyvirt
from anyvirt import memory

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
    limited = "memory://tour-limited?without=snapshot,snapshot.memory,migration.live,migration.cold"
    monkeypatch.setenv("ANYVIRT_TOUR_URIS", limited)
    try:
        assert tour.main(["--no-default"]) == 0
    finally:
        memory.reset("tour-limited")
    out = capsys.readouterr().out
    assert "memory://tour-limited" in out
    assert "not supported" in out


def test_unreachable_targets_are_reported_not_failed(
    tour: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tour.main(["--no-default", "nosuchbackend://user:hunter2@somewhere"]) == 0
    out = capsys.readouterr().out
    assert "unreachable" in out
    assert "hunter2" not in out
