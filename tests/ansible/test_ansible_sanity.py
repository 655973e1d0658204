"""The collection as Ansible's own tools read it: ansible-doc renders every module and the
inventory plugin (the documentation a user sees), and the collection builds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ansible_support import BIN, COLLECTION, ansible_env

MODULES = sorted(p.stem for p in (COLLECTION / "plugins" / "modules").glob("anyvirt_*.py"))


def test_every_module_of_the_issue_is_there() -> None:
    assert MODULES == [
        "anyvirt_backup",
        "anyvirt_clone",
        "anyvirt_info",
        "anyvirt_migrate",
        "anyvirt_restore",
        "anyvirt_snapshot",
        "anyvirt_vm",
    ]


@pytest.mark.parametrize("kind", ["module", "inventory"])
def test_ansible_doc_renders(kind: str, tmp_path: Path) -> None:
    names = MODULES if kind == "module" else ["anyvirt"]
    done = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", kind, *(f"anyvirt.cloud.{n}" for n in names)],
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    pages = done.stdout.split("> ")[1:]  # one page per plugin, each opening with "> MODULE name" or the like
    assert len(pages) == len(names)
    for name, page in zip(names, pages, strict=True):
        assert f"anyvirt.cloud.{name}" in page and "OPTIONS" in page and "EXAMPLES" in page, name
        if kind == "module":
            assert "RETURN VALUES" in page and "uri" in page, name


def test_the_collection_builds(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path", str(tmp_path)],
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "anyvirt-cloud-0.1.0.tar.gz").is_file()
