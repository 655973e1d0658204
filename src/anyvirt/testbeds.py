"""The testbed protocol: what ``anyvirt testbed NAME`` starts, found through entry points.

A testbed is a local, throwaway target to try anyvirt on and to test a backend
against. It lives in its backend's distribution, never in the core, which
registers it under the ``anyvirt.testbeds`` entry-point group::

    [project.entry-points."anyvirt.testbeds"]
    libvirt = "anyvirt_libvirt.testbed:TESTBED"

The registered object (see :class:`Testbed`) has three members:

* ``summary``: one line, shown as the command's help;
* ``options``: the command-line options it takes (:class:`TestbedOption`);
* ``start(**options)``: start the testbed, wait until it answers, and return a
  :class:`RunningTestbed`; raise ``RuntimeError`` (or a subclass) with the
  reason when it cannot (missing packages, a failed build).

``anyvirt testbed NAME [--option ...]`` passes each option to ``start`` as a
keyword, prints the URIs (and the variables a client exports, such as a
throwaway password), waits for Ctrl-C or SIGTERM, then calls
:meth:`RunningTestbed.stop`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import attrs

from anyvirt import plugins

__all__ = ["GROUP", "RunningTestbed", "Testbed", "TestbedOption", "load", "names"]

GROUP = "anyvirt.testbeds"


@attrs.frozen
class TestbedOption:
    """One option of a testbed: ``--<name>`` (underscores as dashes), typed by its default.

    A ``bool`` default makes a flag; an ``int`` default an integer option,
    bounded by ``minimum``/``maximum`` when given; a ``str`` default a text option.
    """

    __test__ = False  # not a pytest test class, whatever its name

    name: str
    help: str
    default: bool | int | str
    minimum: int | None = None
    maximum: int | None = None


@attrs.frozen
class RunningTestbed:
    """A started testbed: where to connect, and how to stop it."""

    __test__ = False

    #: the anyvirt URIs of what was started, one per daemon or simulator
    uris: tuple[str, ...]
    #: stops everything the testbed started; safe to call once
    stop: Callable[[], None] = attrs.field(repr=False)
    #: variables a client needs, e.g. ``{"ANYVIRT_PASSWORD": ...}``; kept out of the repr
    environment: Mapping[str, str] = attrs.field(factory=dict, repr=False)


class Testbed(Protocol):
    """What a distribution registers under :data:`GROUP`."""

    @property
    def summary(self) -> str: ...

    @property
    def options(self) -> Sequence[TestbedOption]: ...

    def start(self, *args: Any, **options: Any) -> RunningTestbed: ...


def names() -> list[str]:
    """The installed testbeds' names; nothing is imported."""
    return plugins.names(GROUP)


def load(name: str) -> Testbed:
    """The testbed registered as ``name``.

    :raises anyvirt.plugins.UnknownPlugin: none is installed under that name.
    :raises anyvirt.plugins.PluginBroken: it fails to import or lacks the protocol's members.
    """
    return cast(Testbed, plugins.load(GROUP, name, "testbed", ("summary", "options", "start")))
