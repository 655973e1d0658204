"""Which restore points a prune keeps: restic's ``forget`` rules, per VM.

Points are grouped by VM (its stable id) and each group is judged on its own,
newest first:

* ``keep_last=n``: the n newest points;
* ``keep_daily=n``: for each of the n most recent days that have points, the
  newest point of that day (UTC); ``keep_weekly`` the same per ISO week,
  ``keep_monthly`` per calendar month.

A point any rule keeps is kept. Rules left as None do not apply; at least one
must be given, so a prune never removes every point by accident.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from anyvirt.errors import InvalidSpec
from anyvirt.repository.points import RestorePoint

Bucket = Callable[[dt.datetime], object]

BUCKETS: dict[str, Bucket] = {
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
}


def check_rules(**rules: int | None) -> dict[str, int]:
    given = {k: v for k, v in rules.items() if v is not None}
    if not given:
        raise InvalidSpec("prune needs at least one keep_* rule (keep_last, keep_daily, "
                          "keep_weekly, keep_monthly)")
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidSpec(f"{key} must be a whole number >= 0, not {value!r}")
    return given


def kept(points: Sequence[RestorePoint], *, keep_last: int | None = None,
         keep_daily: int | None = None, keep_weekly: int | None = None,
         keep_monthly: int | None = None) -> set[str]:
    """The ids of the points the rules keep."""
    check_rules(keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly,
                keep_monthly=keep_monthly)
    groups: dict[str, list[RestorePoint]] = {}
    for point in points:
        groups.setdefault(point.vm_id, []).append(point)
    out: set[str] = set()
    periodic = {"daily": keep_daily, "weekly": keep_weekly, "monthly": keep_monthly}
    for group in groups.values():
        newest_first = sorted(group, key=lambda p: (p.created, p.id), reverse=True)
        out.update(p.id for p in newest_first[:keep_last or 0])
        for name, count in periodic.items():
            seen: set[object] = set()
            for point in newest_first:
                if len(seen) >= (count or 0):
                    break
                bucket = BUCKETS[name](point.created.astimezone(dt.UTC))
                if bucket not in seen:
                    seen.add(bucket)
                    out.add(point.id)
    return out


__all__ = ["check_rules", "kept"]
