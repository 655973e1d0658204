"""Backend discovery: URI scheme -> Driver class, through entry points.

Like fsspec's registry: backends register under the ``anyvirt.backends``
entry-point group, keyed by the first part of the URI scheme (``libvirt`` for
``libvirt+qemu:///system``). Nothing is imported until a scheme is asked for,
so ``import anyvirt`` never pulls in a platform SDK.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from anyvirt.errors import InvalidSpec, NotFound
from anyvirt.plugins import entry_points_of, not_installed

if TYPE_CHECKING:
    from anyvirt.driver import Driver

GROUP = "anyvirt.backends"

_lock = threading.Lock()
_registered: dict[str, type[Driver]] = {}


class UnknownBackend(NotFound, InvalidSpec):
    """No installed backend handles the URI's scheme."""


def register(scheme: str, driver: type[Driver]) -> None:
    """Register a driver class by hand (tests, plugins not installed as distributions)."""
    with _lock:
        _registered[scheme.lower()] = driver


def available() -> list[str]:
    """Every scheme an installed backend answers to."""
    return sorted(set(entry_points_of(GROUP)) | set(_registered))


def driver_for(scheme: str) -> type[Driver]:
    """The Driver class for a URI scheme's backend part (``libvirt``, ``esxi``, ...)."""
    name = scheme.split("+", 1)[0].lower()
    with _lock:
        if name in _registered:
            return _registered[name]
    eps = entry_points_of(GROUP)
    if name not in eps:
        raise UnknownBackend(not_installed("anyvirt backend", name, available()))
    driver: type[Driver] = eps[name].load()
    with _lock:
        _registered[name] = driver
    return driver


def installed_drivers() -> dict[str, type[Driver]]:
    """Backends installed as distributions (entry points), without ones ``register``-ed by hand."""
    out: dict[str, type[Driver]] = {}
    for name, ep in sorted(entry_points_of(GROUP).items()):
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
