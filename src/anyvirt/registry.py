"""Backend discovery: URI scheme -> Driver class, through entry points.

Like fsspec's registry: backends register under the ``anyvirt.backends``
entry-point group, keyed by the first part of the URI scheme (``libvirt`` for
``libvirt+qemu:///system``). Nothing is imported until a scheme is asked for,
so ``import anyvirt`` never pulls in a platform SDK.
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from anyvirt.errors import InvalidSpec, NotFound

if TYPE_CHECKING:
    from anyvirt.driver import Driver

GROUP = "anyvirt.backends"

# Schemes we know of even when their distribution is not installed, so the
# error can say what to install.
KNOWN_EXTRAS: dict[str, str] = {
    "libvirt": "anyvirt[libvirt]",
    "vsphere": "anyvirt[vsphere]",
    "esxi": "anyvirt[vsphere]",
    "proxmox": "anyvirt[proxmox]",
    "virtualbox": "anyvirt[virtualbox]",
}

_lock = threading.Lock()
_registered: dict[str, type[Driver]] = {}


class UnknownBackend(NotFound, InvalidSpec):
    """No installed backend handles the URI's scheme."""


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def register(scheme: str, driver: type[Driver]) -> None:
    """Register a driver class by hand (tests, plugins not installed as distributions)."""
    with _lock:
        _registered[scheme.lower()] = driver


def available() -> list[str]:
    """Every scheme an installed backend answers to."""
    return sorted(set(_entry_points()) | set(_registered))


def driver_for(scheme: str) -> type[Driver]:
    """The Driver class for a URI scheme's backend part (``libvirt``, ``esxi``, ...)."""
    name = scheme.split("+", 1)[0].lower()
    with _lock:
        if name in _registered:
            return _registered[name]
    eps = _entry_points()
    if name not in eps:
        installed = ", ".join(available()) or "none"
        hint = f"; install {KNOWN_EXTRAS[name]}" if name in KNOWN_EXTRAS else ""
        raise UnknownBackend(
            f"no anyvirt backend for scheme {name!r} (installed: {installed}){hint}"
        )
    driver: type[Driver] = eps[name].load()
    with _lock:
        _registered[name] = driver
    return driver


def installed_drivers() -> dict[str, type[Driver]]:
    """Backends installed as distributions (entry points), without ones ``register``-ed by hand."""
    out: dict[str, type[Driver]] = {}
    for name, ep in sorted(_entry_points().items()):
        try:
            out[name] = ep.load()
        except Exception:  # noqa: S112 - a broken optional backend must not hide the others
            continue
    return out


def all_drivers() -> dict[str, type[Driver]]:
    """Load every installed backend (for the support matrix); skips ones that fail to import."""
    out: dict[str, type[Driver]] = {}
    for name in available():
        try:
            out[name] = driver_for(name)
        except Exception:  # noqa: S112 - a broken optional backend must not hide the others
            continue
    return out
