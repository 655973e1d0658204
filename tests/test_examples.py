"""The DESIGN.md walkthrough runs unchanged on memory://."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_design_walkthrough_on_memory(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("design_walkthrough", EXAMPLES / "design_walkthrough.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["memory://walk-test", "memory://walk-test-other"]) == 0
    out = capsys.readouterr().out
    assert "not supported" not in out, "memory:// supports the whole contract"
    for name in ("host.evacuate", "anyvirt.migrate", "host.restore", "snap.revert()"):
        assert name in out
