"""The difference between two listings, and which fields make a change (pure logic)."""

from __future__ import annotations

from anyvirt.model import PowerState, VMSummary
from anyvirt.watch import changed_fields, diff


def vm(vm_id: str, name: str = "", state: PowerState = PowerState.STOPPED, **kw: object) -> VMSummary:
    return VMSummary(id=vm_id, name=name or vm_id, state=state, **kw)  # type: ignore[arg-type]


def test_diff_gives_removals_first_then_additions_and_changes() -> None:
    before = {"a": vm("a"), "b": vm("b"), "c": vm("c", cpus=1)}
    after = {"b": vm("b"), "c": vm("c", cpus=2), "d": vm("d", name="a")}
    out = list(diff(before, after))
    assert out == [(before["a"], None), (before["c"], after["c"]), (None, after["d"])]


def test_unchanged_listings_differ_in_nothing() -> None:
    listing = {str(i): vm(str(i)) for i in range(100)}
    assert list(diff(listing, dict(listing))) == []


def test_raw_state_alone_is_no_change_but_every_watched_field_is() -> None:
    base = vm("a", raw_state="running", state=PowerState.RUNNING, cpus=1, memory_mib=64, node="n1")
    assert changed_fields(base, vm("a", raw_state="blocked", state=PowerState.RUNNING, cpus=1,
                                   memory_mib=64, node="n1")) == frozenset()
    other = vm("a", name="b", raw_state="x", state=PowerState.PAUSED, cpus=2, memory_mib=128,
               node="n2", template=True)
    assert changed_fields(base, other) == {"name", "state", "cpus", "memory_mib", "node", "template"}
