"""``Node``: one hypervisor behind a Host (an ESXi host of a vCenter, a Proxmox node)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, overload

from anyvirt.model import NodeInfo
from anyvirt.tasks import DEFAULT_TIMEOUT, Task

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.vm import VM


class Node:
    def __init__(self, host: Host, info: NodeInfo) -> None:
        self.host = host
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def state(self) -> str:
        return self.info.state

    def vms(self) -> list[VM]:
        """The VMs currently on this node."""
        return [vm for vm in self.host.vms.list() if vm.node in (self.id, self.name)]

    @property
    def maintenance(self) -> bool:
        return self.info.maintenance

    @overload
    def set_maintenance(self, on: bool, *, wait: Literal[True] = ...,
                        timeout: float | None = ...) -> Node: ...

    @overload
    def set_maintenance(self, on: bool, *, wait: Literal[False],
                        timeout: float | None = ...) -> Task[Node]: ...

    def set_maintenance(self, on: bool, *, wait: bool = True,
                        timeout: float | None = DEFAULT_TIMEOUT) -> Node | Task[Node]:
        """Enter (``True``) or leave (``False``) maintenance mode. Entering needs the node
        empty: ``host.evacuate(node, maintenance=True)`` moves its VMs off first; leaving
        lets the node take VMs again. ``wait=False`` returns a ``Task``."""
        result: Node | Task[Node] = self.host.gate.set_maintenance(
            self.id, self.name, bool(on), lambda _: self.refresh(), wait=wait, timeout=timeout)
        return result

    def _move_target(self) -> tuple[Host, str | None]:
        """Where ``vm.migrate(to=node)`` goes: this node of its host."""
        return self.host, self.id

    def refresh(self) -> Node:
        self.info = self.host.nodes.get(self.id).info
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.host is self.host and other.id == self.id

    def __hash__(self) -> int:
        return hash((id(self.host), self.id))

    def __repr__(self) -> str:
        return f"<Node {self.name} ({self.state}) on {self.host.backend}>"
