"""Every ```python block of README.md and docs/ runs, as written, and cleans up after itself.

A block runs on its own (a fresh namespace), in a scratch directory holding ``demo.img`` (what
the pages' ``anyvirt image demo demo.img`` writes), with the config and data directories
pointed at empty ones: ``anyvirt.connect()`` there is the default a fresh machine gets (the
embedded QEMU where the libvirt backend and QEMU are installed, else ``memory://default``).
A block that cannot run here (it needs a real vCenter, or continues another block) is preceded
by ``<!-- not run: the reason -->``; the reason is required.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import anyvirt
from anyvirt import images, memory

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: a python block, and the HTML comment (if any) on the line right before it
_BLOCK = re.compile(r"(?:<!--(?P<comment>[^\n]*?)-->\n\n?)?^```python\n(?P<code>.*?)^```", re.M | re.S)
_NOT_RUN = re.compile(r"^\s*not run:\s*(?P<reason>.*?)\s*$")


def blocks() -> Iterator[tuple[str, int, str, str | None]]:
    """(page, line, code, why it is not run or None) for every python block."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code")) + 1
            comment = match.group("comment")
            not_run = _NOT_RUN.match(comment) if comment is not None else None
            reason = not_run.group("reason") if not_run else None
            yield str(page.relative_to(ROOT)), line, match.group("code"), reason


def test_every_not_run_mark_gives_its_reason() -> None:
    found = list(blocks())
    assert len(found) > 20
    for page, line, _, reason in found:
        assert reason != "", f"{page}:{line}: `<!-- not run: ... -->` needs its reason"
    for page in PAGES:  # a mark that is not right before a block would quietly mark nothing
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"<!--\s*not run:.*?-->\n(?!\n?```python\n)", text):
            raise AssertionError(f"{page.name}: {match.group(0)!r} is not right before a ```python block")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with ``demo.img``, as after ``anyvirt image demo demo.img``."""
    work = tmp_path_factory.mktemp("docs-examples")
    images.write("demo", work / "demo.img")
    return work


@pytest.fixture
def fresh_machine(scratch: Path, embedded_data_home: Path, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process as on a fresh machine: no profile, no $ANYVIRT_URI, empty data dirs."""
    for name in ("ANYVIRT_URI", "ANYVIRT_PROFILE", "ANYVIRT_USERNAME", "ANYVIRT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    # empty but for the embedded QEMU's root, which is one per process (tests/conftest.py)
    monkeypatch.setenv("XDG_DATA_HOME", str(embedded_data_home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("ANYVIRT_CONFIG", str(tmp_path / "config" / "none.toml"))
    monkeypatch.chdir(scratch)
    return scratch


RUNNABLE = [pytest.param(code, id=f"{page}:{line}")
            for page, line, code, reason in blocks() if reason is None]


@pytest.mark.parametrize("code", RUNNABLE)
def test_the_block_runs_and_cleans_up(code: str, fresh_machine: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    worlds_before = set(memory._worlds)
    files_before = set(os.listdir(fresh_machine))
    # the default connection, watched only by the blocks that use it (opening it is slow)
    default = anyvirt.connect() if "anyvirt.connect()" in code else None
    try:
        vms_before = {v.id for v in default.vms.list()} if default else set()
        try:
            exec(compile(code, "example", "exec"), {"__name__": "__example__"})
        finally:
            made_worlds = set(memory._worlds) - worlds_before
            left = {name: [vm.name for vm in memory._worlds[name].vms.values()] for name in made_worlds}
            for name in made_worlds:
                memory.reset(name)
        assert not any(left.values()), f"the example left VMs behind: {left}"
        if default is not None:
            assert {v.id for v in default.vms.list()} == vms_before, "the example left VMs behind"
        assert set(os.listdir(fresh_machine)) <= files_before, "the example left files behind"
    finally:
        if default is not None:
            default.close()
    capsys.readouterr()
