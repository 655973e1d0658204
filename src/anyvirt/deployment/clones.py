"""One identity, many clones: each clone of a bulk clone is its own machine.

``for_clones(identity, names)`` gives each clone its host name (made from its
VM name, :func:`~anyvirt.deployment.hostnames.hostname_from_name`) and a new
instance id of its own. What cannot be shared by several machines is refused
for more than one clone: a fixed ``hostname``, a fixed ``instance_id`` and
static addresses. Two names that would become the same host name (``web_1``
and ``web-1``, ``Web1`` and ``web1``) are refused as well.
"""

from __future__ import annotations

from collections.abc import Sequence

from anyvirt.deployment.identity import Identity, ResolvedIdentity, Static
from anyvirt.validation import invalid


def for_clones(identity: Identity, names: Sequence[str],
               instance_ids: Sequence[str] | None = None) -> list[ResolvedIdentity]:
    """The identity of each clone named in ``names`` (``instance_ids``, when given, one per
    clone; otherwise new ones)."""
    if instance_ids is not None:
        if len(instance_ids) != len(names):
            raise ValueError("one instance id per clone")
        if len(set(instance_ids)) != len(instance_ids):
            raise invalid("instance_id", "duplicate", "two clones cannot have the same instance id")
    if len(names) > 1:
        shared = [what for what, given in (
            ("hostname", identity.hostname is not None),
            ("instance_id", identity.instance_id is not None),
            ("static addresses", any(isinstance(nic, Static) for nic in identity.network)),
        ) if given]
        if shared:
            raise invalid("identity", "shared",
                          f"{len(names)} clones cannot share {' and '.join(shared)}: each clone gets "
                          "its own host name (its name) and instance id; leave them unset")
    seen: dict[str, str] = {}
    out = []
    for index, name in enumerate(names):
        chosen = instance_ids[index] if instance_ids is not None else None
        resolved = identity.resolve(name, chosen)
        other = seen.get(resolved.hostname.lower())
        if other is not None:
            raise invalid("hostname", "duplicate",
                          f"clones {other!r} and {name!r} would both be host {resolved.hostname!r}")
        seen[resolved.hostname.lower()] = name
        out.append(resolved)
    return out


__all__ = ["for_clones"]
