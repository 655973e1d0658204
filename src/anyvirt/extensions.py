"""Typed extension namespaces: a backend's own operations, still through the gate.

What only one platform can do (a vSphere VM folder, a Proxmox pool) is not
reached through ``host.driver``: a backend ships an :class:`Extension`
subclass, lists it in ``Driver.extensions``, and users ask for it by type::

    from anyvirt_vsphere import VSphereExtensions
    folder = host.extension(VSphereExtensions).create_folder("web")

Every method of an extension runs through :meth:`Extension._through_gate`, so
it gets the same capability check, one change at a time per VM, deadline and
``Task`` as the core operations (``wait=False`` returns the Task). Nobody
builds a ``Job`` by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from anyvirt.model import Capability, PowerState
from anyvirt.rules import ANY_STATE
from anyvirt.tasks import Job, ProgressCallback

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.vm import VM

T = TypeVar("T")


class Extension:
    """Base of a backend's extension namespace; built by ``host.extension(Kind)``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def _through_gate(self, what: str, work: Callable[[Job], T], *,
                      capability: Capability | None = None, vm: VM | None = None,
                      states: frozenset[PowerState] = ANY_STATE, wait: bool = True,
                      timeout: float | None = 600.0,
                      on_progress: ProgressCallback | None = None) -> Any:
        return self.host.gate.extension(what, work, capability=capability, vm=vm, states=states,
                                        wait=wait, timeout=timeout, on_progress=on_progress)
