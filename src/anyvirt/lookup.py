"""Finding one object by what a user typed: one rule for VMs and snapshots everywhere.

The id first, then the name; a name that more than one object carries is refused
(``AmbiguousName``, naming the ids), never resolved by listing order: a name is
user-writable, so it must not decide which VM an operation acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from anyvirt.errors import AmbiguousName, NotFound
from anyvirt.model import NodeInfo

T = TypeVar("T")


def by_id_or_name(items: Iterable[T], ref: str, *, id_of: Callable[[T], str],
                  name_of: Callable[[T], str], what: str, where: str, hint: str = "") -> T:
    """The item whose id is ``ref``, else the one whose name is ``ref``; ``NotFound`` if
    none (``hint`` appended: what there is), ``AmbiguousName`` if the name is more than
    one's."""
    items = list(items)
    named: list[T] = []
    for item in items:
        if id_of(item) == ref:
            return item
        if name_of(item) == ref:
            named.append(item)
    if len(named) == 1:
        return named[0]
    if named:
        ids = tuple(id_of(item) for item in named)
        raise AmbiguousName(
            f"{len(named)} {what}s are named {ref!r} on {where} (ids: {', '.join(ids)}): "
            "give the id of the one you mean", ids)
    raise NotFound(f"no {what} with id or name {ref!r} on {where}{hint}")


def find_node(nodes: Sequence[NodeInfo], ref: str, where: str) -> NodeInfo:
    """A node by id, else by name, of ``nodes`` (a connection's listing)."""
    known = ", ".join(n.name for n in nodes) or "none"
    return by_id_or_name(nodes, ref, id_of=lambda n: n.id, name_of=lambda n: n.name,
                         what="node", where=where, hint=f" (nodes: {known})")


__all__ = ["by_id_or_name", "find_node"]
