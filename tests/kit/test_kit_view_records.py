"""The kit's records of served files by path: what the raw views' qemu-img record, the
mapped sources and the move digests share."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from anyvirt.kit.view_records import ViewRecord, resolved


def test_a_fact_is_found_by_any_spelling_of_its_path_and_only_while_recorded(tmp_path: Path) -> None:
    record: ViewRecord[str] = ViewRecord()
    view = tmp_path / "view"
    view.touch()
    (tmp_path / "link").symlink_to(view)
    with record.recorded({str(view): "fact"}) as mine:
        assert mine == {str(view): "fact"}
        assert record.get(tmp_path / "link") == "fact"
        assert record.get(str(tmp_path / "." / "view")) == "fact"
        assert record.at(resolved(view)) == "fact"
        assert record.get(tmp_path / "other") is None
    assert record.get(view) is None


def test_a_path_recorded_already_keeps_its_first_fact(tmp_path: Path) -> None:
    record: ViewRecord[int] = ViewRecord()
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    with record.recorded({first: 1}):
        with record.recorded({first: 2, second: 3}) as mine:
            assert mine == {second: 3}  # only what this block recorded
            assert record.get(first) == 1
        assert record.get(first) == 1  # the inner block did not take the outer's away
        assert record.get(second) is None
        with pytest.raises(ValueError, match="recorded already"), record.recorded_one(first, 4):
            pass
    assert record.get(first) is None


def test_a_lookup_by_key_touches_no_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record: ViewRecord[str] = ViewRecord()
    with record.recorded({str(tmp_path / "v"): "x"}):
        key = resolved(tmp_path / "v")

        def refuse(*_args: object, **_kw: object) -> None:
            raise AssertionError("the file system was touched")

        monkeypatch.setattr(os, "lstat", refuse)
        monkeypatch.setattr(os, "stat", refuse)
        assert record.at(key) == "x"


def test_recording_does_not_hold_the_lock_while_resolving(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolving a view's path may wait for its server, and the server looks facts up from
    inside a read: a lookup while a path is being resolved must not wait for it."""
    record: ViewRecord[str] = ViewRecord()
    resolving, looked_up = threading.Event(), threading.Event()
    real = os.path.realpath

    def slow(path: str | os.PathLike[str], *args: object, **kwargs: object) -> str:
        if str(path).endswith("slow"):
            resolving.set()
            looked_up.wait(5)
        return real(path)

    monkeypatch.setattr(os.path, "realpath", slow)
    entered = record.recorded({str(tmp_path / "slow"): "s"})
    maker = threading.Thread(target=entered.__enter__)
    maker.start()
    assert resolving.wait(5)
    lookup = threading.Thread(target=lambda: (record.at("/nowhere"), looked_up.set()))
    lookup.start()
    lookup.join(2)
    assert looked_up.is_set(), "a lookup waited for a path being resolved"
    maker.join(5)
    assert record.get(tmp_path / "slow") == "s"
    entered.__exit__(None, None, None)
    assert record.get(tmp_path / "slow") is None
