"""Prune's keep_* rules (pure logic: restic's forget semantics, per VM)."""

from __future__ import annotations

import datetime as dt

import pytest

from anyvirt import InvalidSpec
from anyvirt.repository import RestorePoint
from anyvirt.repository.retention import kept


def point(day: str, hour: int = 12, vm: str = "a") -> RestorePoint:
    created = dt.datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00")
    return RestorePoint(id=f"{vm}-{day}-{hour}", vm_name=vm, vm_id=vm, created=created,
                        incremental=True, read_bytes=0, stored_bytes=0)


# two a day over three weeks of December 2026 (Dec 1 is a Tuesday)
HISTORY = [point(f"2026-12-{d:02d}", h) for d in range(1, 22) for h in (6, 18)]


def test_keep_last_keeps_the_newest() -> None:
    assert kept(HISTORY, keep_last=3) == {"a-2026-12-21-18", "a-2026-12-21-6", "a-2026-12-20-18"}


def test_keep_daily_keeps_the_newest_of_each_recent_day() -> None:
    assert kept(HISTORY, keep_daily=2) == {"a-2026-12-21-18", "a-2026-12-20-18"}


def test_keep_weekly_and_monthly_count_periods_that_have_points() -> None:
    # ISO weeks: Dec 21 (Mon) starts a week; Dec 14-20 and Dec 7-13 before it
    assert kept(HISTORY, keep_weekly=3) == {"a-2026-12-21-18", "a-2026-12-20-18", "a-2026-12-13-18"}
    older = [point("2026-10-05"), point("2026-11-30"), *HISTORY]
    assert kept(older, keep_monthly=5) == {"a-2026-12-21-18", "a-2026-11-30-12", "a-2026-10-05-12"}


def test_rules_add_up_and_apply_per_vm() -> None:
    both = [*HISTORY, point("2026-01-01", vm="b")]
    assert kept(both, keep_last=1, keep_daily=2) == {"a-2026-12-21-18", "a-2026-12-20-18",
                                                     "b-2026-01-01-12"}
    assert kept(both, keep_last=0) == set()


@pytest.mark.parametrize("rules", [{}, {"keep_last": -1}, {"keep_daily": True}, {"keep_weekly": 1.5}])
def test_bad_rules_are_refused(rules: dict[str, object]) -> None:
    with pytest.raises(InvalidSpec):
        kept(HISTORY, **rules)  # type: ignore[arg-type]
