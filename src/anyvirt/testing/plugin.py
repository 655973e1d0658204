"""The pytest plugin behind the contract suite (registered through the ``pytest11`` entry point).

Installing anyvirt loads it into every pytest session, so it stays inert: it
registers the ``anyvirt_requires`` marker and two plain fixtures the suite's
tests ask for (``anyvirt_vm_spec``, ``make_vm``), and nothing else. It has no
autouse fixture (the capability gate belongs to the suite's classes,
:class:`anyvirt.testing.suite.base.ContractTests`) and no testbed fixtures:
those come with the backend distributions, opted into with
``pytest_plugins = ["anyvirt_libvirt.testbed.fixtures"]`` and the like.

A backend's test module does ``from anyvirt.testing.suite import *`` and
provides, in its conftest or module:

* ``anyvirt_host`` (required): a connected :class:`~anyvirt.Host`.
* ``anyvirt_vm_spec`` (optional): ``name -> VMSpec`` for a VM the backend can
  really create and boot. The default is a small VM with one 64 MiB disk.
* ``anyvirt_migration_target`` (needed when the backend declares a migration
  capability): a :class:`~anyvirt.Node` of the same host or another ``Host``.
* ``anyvirt_other_host`` (optional): another ``Host`` of the same backend, where
  the migration target is a node (the move refusals' linked clones go there).
* ``anyvirt_unreachable_host`` (optional): a ``Host`` of the same backend that
  this one's ``can_reach`` refuses (the same endpoint under another URI).

The fixtures here build on those: ``make_vm`` creates VMs with unique names and
removes them afterwards, whatever the test did to them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from anyvirt.errors import AnyvirtError, NotFound
from anyvirt.host import Host
from anyvirt.model import DiskSpec, NicSpec, PowerState, VMSpec
from anyvirt.vm import VM

SpecFactory = Callable[[str], VMSpec]


def unique_name(prefix: str = "av") -> str:
    """``PREFIX-`` and 8 random hex digits: a name no other test (or earlier run) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def small_spec(name: str, **changes: Any) -> VMSpec:
    """The smallest ordinary VM every backend creates: one CPU, 64 MiB, one 64 MiB disk, one
    NIC; ``changes`` replace any of its fields (``disks=[]``, ``description=...``)."""
    fields: dict[str, Any] = dict(name=name, cpus=1, memory_mib=64, disks=[DiskSpec(size_gib=0.0625)],
                                  nics=[NicSpec()])
    fields.update(changes)
    return VMSpec(**fields)


@pytest.fixture
def anyvirt_vm_spec() -> SpecFactory:
    """Default spec factory; backends override it with a bootable image where needed."""
    return small_spec


def destroy(vm: VM) -> None:
    """Remove a VM whatever its state; used for cleanup, so it never raises."""
    with contextlib.suppress(AnyvirtError):
        vm.refresh()
        if vm.state in (PowerState.RUNNING, PowerState.PAUSED, PowerState.CRASHED):
            vm.stop(force=True, timeout=60)
        vm.delete(disks=True)


@pytest.fixture
def make_vm(anyvirt_host: Host, anyvirt_vm_spec: SpecFactory) -> Iterator[Callable[..., VM]]:
    """``make_vm(prefix="av", **spec_changes)`` -> a new stopped VM, deleted after the test.

    Clones and migrated VMs a test makes can be handed to ``make_vm.track(vm)``
    to be cleaned up as well.
    """
    made: list[VM] = []

    def make(prefix: str = "av", **changes: Any) -> VM:
        spec = anyvirt_vm_spec(unique_name(prefix))
        if changes:
            import attrs

            spec = attrs.evolve(spec, **changes)
        vm = anyvirt_host.vms.create(spec)
        made.append(vm)
        return vm

    def track(vm: VM) -> VM:
        made.append(vm)
        return vm

    make.track = track  # type: ignore[attr-defined]
    yield make
    for vm in reversed(made):
        with contextlib.suppress(NotFound):
            destroy(vm)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "anyvirt_requires(*capabilities): run only where the host declares every capability",
    )

