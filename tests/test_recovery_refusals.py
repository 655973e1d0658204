"""anyvirt.recover refuses before anything changes: a failed host that still answers, a
target with no way to recover, nothing known of the failed host."""

from __future__ import annotations

from pathlib import Path

import pytest

import anyvirt
from anyvirt import BackupRepository, InvalidSpec, InvalidState, NotFound


def test_a_failed_host_that_still_answers_is_refused() -> None:
    with anyvirt.connect("memory://rec-alive") as alive, anyvirt.connect("memory://rec-new") as new:
        alive.vms.create(anyvirt.VMSpec(name="web1", cpus=1, memory_mib=64))
        with pytest.raises(InvalidState, match=r"still answers.*evacuate"):
            anyvirt.recover(failed="memory://rec-alive", to=new)
        assert new.vms.list() == []


def test_the_same_host_or_a_target_without_records_and_no_repository_is_refused() -> None:
    with anyvirt.connect("memory://rec-same") as host, pytest.raises(InvalidSpec, match="failed host itself"):
        anyvirt.recover(failed="memory://rec-same", to=host)


def test_nothing_known_of_the_failed_host_is_not_found(tmp_path: Path) -> None:
    with anyvirt.connect("memory://rec-target") as host:
        with pytest.raises(InvalidSpec, match="no definition records"):
            anyvirt.recover(failed="libvirt+qemu+unix:///system?socket=/nonexistent/sock", to=host)
        repo = BackupRepository(tmp_path / "repo")
        with pytest.raises(NotFound, match="nothing of"):
            anyvirt.recover(failed="libvirt+qemu+unix:///system?socket=/nonexistent/sock", to=host,
                            repository=repo)
