"""Named extras that other distributions register through entry points: testbeds and images.

Backends have their own registry (:mod:`anyvirt.registry`, keyed by URI scheme).
The groups here are plainer: an entry point's name is what the user types
(``anyvirt testbed libvirt``, ``anyvirt image demo``) and its object is loaded
only when that name is asked for, so listing the names imports nothing and the
core carries none of the code behind them.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from anyvirt.errors import AnyvirtError, NotFound
from anyvirt.registry import KNOWN_EXTRAS

__all__ = ["PluginBroken", "UnknownPlugin", "load", "names"]


class UnknownPlugin(NotFound):
    """No installed distribution registers that name in the group."""


class PluginBroken(AnyvirtError):
    """The name is registered, but importing its object failed (a broken or partial install)."""


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    """The names registered in ``group``, sorted; nothing is imported."""
    return sorted(_entry_points(group))


def load(group: str, name: str, kind: str, members: tuple[str, ...] = ()) -> object:
    """The object registered as ``name`` in ``group``, with every attribute in ``members``.

    ``kind`` names it in errors ("testbed").

    :raises UnknownPlugin: nothing is registered under that name.
    :raises PluginBroken: it fails to import, or lacks one of ``members``.
    """
    eps = _entry_points(group)
    if name not in eps:
        installed = ", ".join(sorted(eps)) or "none"
        hint = f"; install {KNOWN_EXTRAS[name]}" if name in KNOWN_EXTRAS else ""
        raise UnknownPlugin(f"no {kind} {name!r} is installed (installed: {installed}){hint}")
    try:
        found = eps[name].load()
    except Exception as exc:
        raise PluginBroken(f"the {kind} {name!r} ({eps[name].value}) failed to load: {exc}") from exc
    missing = [member for member in members if not hasattr(found, member)]
    if missing:
        raise PluginBroken(f"the {kind} {name!r} ({eps[name].value}) has no {', '.join(missing)}")
    return found
