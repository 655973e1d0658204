"""What other distributions register through entry points: backends, testbeds and images.

The one loader for every group. An entry point's name is what the user types
(``anyvirt testbed libvirt``, ``anyvirt image demo``, the ``libvirt`` of
``libvirt+qemu://``) and its object is loaded only when that name is asked
for, so listing the names imports nothing and the core carries none of the
code behind them. :mod:`anyvirt.registry` adds the URI-scheme view of the
backends group on top.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from anyvirt.errors import AnyvirtError, NotFound

__all__ = ["KNOWN_EXTRAS", "PluginBroken", "UnknownPlugin", "entry_points_of", "load", "names",
           "not_installed"]

# Names we know of even when their distribution is not installed, so the error
# can say what to install.
KNOWN_EXTRAS: dict[str, str] = {
    "libvirt": "anyvirt[libvirt]",
    "vsphere": "anyvirt[vsphere]",
    "esxi": "anyvirt[vsphere]",
    "proxmox": "anyvirt[proxmox]",
    "virtualbox": "anyvirt[virtualbox]",
}


class UnknownPlugin(NotFound):
    """No installed distribution registers that name in the group."""


class PluginBroken(AnyvirtError):
    """The name is registered, but importing its object failed (a broken or partial install)."""


def entry_points_of(group: str) -> dict[str, EntryPoint]:
    """Name -> entry point of ``group``; nothing is imported."""
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    """The names registered in ``group``, sorted; nothing is imported."""
    return sorted(entry_points_of(group))


def not_installed(kind: str, name: str, installed: list[str]) -> str:
    """The message for a name nothing registers, with what to install where we know it."""
    hint = f"; install {KNOWN_EXTRAS[name]}" if name in KNOWN_EXTRAS else ""
    return f"no {kind} {name!r} is installed (installed: {', '.join(installed) or 'none'}){hint}"


def load(group: str, name: str, kind: str, members: tuple[str, ...] = ()) -> object:
    """The object registered as ``name`` in ``group``, with every attribute in ``members``.

    ``kind`` names it in errors ("testbed").

    :raises UnknownPlugin: nothing is registered under that name.
    :raises PluginBroken: it fails to import, or lacks one of ``members``.
    """
    eps = entry_points_of(group)
    if name not in eps:
        raise UnknownPlugin(not_installed(kind, name, sorted(eps)))
    try:
        found = eps[name].load()
    except Exception as exc:
        raise PluginBroken(f"the {kind} {name!r} ({eps[name].value}) failed to load: {exc}") from exc
    missing = [member for member in members if not hasattr(found, member)]
    if missing:
        raise PluginBroken(f"the {kind} {name!r} ({eps[name].value}) has no {', '.join(missing)}")
    return found
