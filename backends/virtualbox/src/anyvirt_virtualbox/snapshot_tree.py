"""The snapshot tree as ``snapshot list --machinereadable`` (and ``showvminfo``) print it.

The key suffix is the path from the root: ``SnapshotName`` is the root,
``SnapshotName-2-1`` the first child of the root's second child. The
``CurrentSnapshot*`` lines come right after the current snapshot's own lines,
so they may sit in the middle of the tree. A VM without snapshots prints
"This machine does not have any snapshots" instead (exit 1 on older releases,
0 on 7.2).

The driver does not read snapshots from here: their names and descriptions are
printed raw, so a description holding ``SnapshotName-1="..."`` lines reads as a
snapshot of its own (snapshots come from the VM's ``.vbox`` file, see
snapshots). This parser stays for reading what a VBoxManage printed, in tests
and tools, where the values are known.
"""

from __future__ import annotations

import re

import attrs

from anyvirt_virtualbox.machinereadable import Parsed, parse

NO_SNAPSHOTS = "does not have any snapshots"
_NAME_KEY = re.compile(r"^SnapshotName(?P<path>(?:-\d+)*)$")


@attrs.frozen
class Node:
    uuid: str
    name: str
    description: str
    parent: str | None
    path: str  # the key suffix: "" for the root, "-1-2" for a grandchild


@attrs.frozen
class Tree:
    nodes: tuple[Node, ...]
    current: str | None

    def by_uuid(self) -> dict[str, Node]:
        return {n.uuid: n for n in self.nodes}


def tree_from(info: Parsed) -> Tree:
    by_path: dict[str, str] = {}
    nodes = []
    for key, name in info.values.items():
        m = _NAME_KEY.match(key)
        if not m:
            continue
        path = m["path"]
        uuid = info.get(f"SnapshotUUID{path}").lower()
        by_path[path] = uuid
        parent_path = path.rsplit("-", 1)[0] if path else None
        nodes.append(
            Node(
                uuid=uuid,
                name=name,
                description=info.get(f"SnapshotDescription{path}"),
                parent=by_path.get(parent_path) if parent_path is not None else None,
                path=path,
            )
        )
    current = info.get("CurrentSnapshotUUID").lower() or None
    return Tree(nodes=tuple(nodes), current=current)


def parse_snapshot_list(text: str) -> Tree:
    """``snapshot <vm> list --machinereadable`` -> the tree (empty for a VM without snapshots)."""
    if NO_SNAPSHOTS in text and "SnapshotName" not in text:
        return Tree(nodes=(), current=None)
    return tree_from(parse(text))
