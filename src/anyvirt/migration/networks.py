"""Where a VM's NICs go on another host: one rule for moves, restores and restore points.

A NIC keeps its network when the target has one of that name; ``networks=`` maps the
others (``{"*": "lan"}``: every network not named otherwise). A network the target lacks
and the map does not name is an ``InvalidSpec`` listing the target's networks, raised
before anything is copied: quietly putting a lab-only NIC on the target's default network
could bridge it anywhere. A NIC on no named network joins the target's default.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING

from attrs import frozen

from anyvirt.errors import InvalidSpec

if TYPE_CHECKING:
    from anyvirt.host import Host

ANY_NETWORK = "*"  # networks={"*": "lan"}: where every network not named otherwise goes


@frozen
class NetworkRule:
    """The network map, checked against one target's networks."""

    target_uri: str
    available: frozenset[str]
    wanted: Mapping[str, str]

    @classmethod
    def for_target(cls, target: Host, networks: Mapping[str, str] | None = None) -> NetworkRule:
        """The rule for ``target``; ``InvalidSpec`` when the map names a network it lacks."""
        rule = cls(target.uri, frozenset(target.info().networks), dict(networks or {}))
        for src_net, dst_net in rule.wanted.items():
            if dst_net not in rule.available:
                raise InvalidSpec(f"networks: {src_net!r} -> {dst_net!r}, but {target.uri} has no "
                                  f"network {dst_net!r} (it has: {rule.listing})")
        return rule

    @property
    def listing(self) -> str:
        return ", ".join(repr(n) for n in sorted(self.available)) or "none"

    def place(self, nic: str, network: str | None) -> tuple[str | None, str]:
        """Where NIC ``nic`` (on ``network``) goes, and how: "default" (it is on no named
        network; None is the target's default), "mapped" or "same name"."""
        if network is None:
            return None, "default"
        if network in self.wanted:
            return self.wanted[network], "mapped"
        if network in self.available:
            return network, "same name"
        if ANY_NETWORK in self.wanted:
            return self.wanted[ANY_NETWORK], "mapped"
        raise InvalidSpec(
            f"NIC {nic}: network {network!r} does not exist on {self.target_uri}; map it, e.g. "
            f"networks={{{network!r}: ...}} or --network-map {shlex.quote(network + '=NAME')} "
            f"(it has: {self.listing})")


__all__ = ["ANY_NETWORK", "NetworkRule"]
