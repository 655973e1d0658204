"""Least-loaded placement by memory given out; nodes in maintenance or offline take nothing."""

from __future__ import annotations

import pytest

from anyvirt.errors import InvalidState
from anyvirt.kit.placement import least_loaded
from anyvirt.model import NodeInfo

NODES = [NodeInfo(id="n1", name="a"), NodeInfo(id="n2", name="b"), NodeInfo(id="n3", name="c")]


def test_least_memory_given_out_wins_ties_by_id() -> None:
    assert least_loaded(NODES, []).id == "n1"
    assert least_loaded(NODES, [("n1", 2048), ("n2", 1024), ("n3", 512), ("n3", 1024)]).id == "n2"
    assert least_loaded(NODES, [("n1", 100), ("gone", 0)]).id == "n2"


def test_maintenance_and_offline_nodes_are_skipped() -> None:
    nodes = [NodeInfo(id="n1", name="a", maintenance=True, state="maintenance"),
             NodeInfo(id="n2", name="b", state="offline"), NodeInfo(id="n3", name="c")]
    assert least_loaded(nodes, [("n3", 10**6)]).id == "n3"
    with pytest.raises(InvalidState, match="maintenance or offline"):
        least_loaded(nodes[:2], [])
