"""Fixtures for the libvirt backend's tests: real isolated daemons and the tiny real guest.

Every VM a test creates is removed again by the ``vms`` fixture, whatever
state the test left it in, so the session-scoped daemons stay clean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The testbed fixtures, imported rather than named in ``pytest_plugins``: pytest refuses
# ``pytest_plugins`` in a conftest below the rootdir when the whole project is collected.
from anyvirt_libvirt.testbed import fixtures as libvirt_fixtures
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from anyvirt_libvirt.testbed.network import IsolatedNetwork
from libvirt_support import destroy, guest_spec

import anyvirt
from anyvirt.host import Host
from anyvirt.model import VMSpec
from anyvirt.testing.plugin import unique_name
from anyvirt.vm import VM

guest_image = libvirt_fixtures.guest_image
libvirt_daemon = libvirt_fixtures.libvirt_daemon
libvirt_daemon_pair = libvirt_fixtures.libvirt_daemon_pair
libvirt_isolated_daemon = libvirt_fixtures.libvirt_isolated_daemon
linux_guest = libvirt_fixtures.linux_guest
linux_guest_disk = libvirt_fixtures.linux_guest_disk


@pytest.fixture(scope="session")
def pair(libvirt_daemon_pair: tuple[LibvirtDaemon, LibvirtDaemon]) -> Iterator[tuple[Host, Host]]:
    first, second = libvirt_daemon_pair
    with anyvirt.connect(first.anyvirt_uri) as a, anyvirt.connect(second.anyvirt_uri) as b:
        yield a, b


@pytest.fixture(scope="session")
def host(pair: tuple[Host, Host]) -> Host:
    """The first daemon of the pair: one daemon fewer to start (each probes QEMU for ~8 s)."""
    return pair[0]


@pytest.fixture
def vms() -> Iterator[Callable[[VM], VM]]:
    """``vms(vm)`` registers a VM for removal after the test."""
    made: list[VM] = []

    def track(vm: VM) -> VM:
        made.append(vm)
        return vm

    yield track
    for vm in reversed(made):
        destroy(vm)


@pytest.fixture
def tcg_host(libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork]) -> Iterator[Host]:
    """The isolated daemon (its own network namespace, an isolated network with DHCP) with
    QEMU under TCG (``accel=tcg``): the Linux test guest's stock kernel does not run under
    this machine's KVM."""
    daemon, _ = libvirt_isolated_daemon
    with anyvirt.connect(f"{daemon.anyvirt_uri}&accel=tcg") as host:
        yield host


@pytest.fixture(scope="session")
def spec_for(guest_image: Path) -> Callable[[str], VMSpec]:
    """``spec_for(name)`` -> the spec of a VM running the tiny guest."""
    return lambda name: guest_spec(name, guest_image)


@pytest.fixture
def guest(host: Host, guest_image: Path, vms: Callable[[VM], VM]) -> Callable[[str], VM]:
    """``guest(prefix)`` -> a new, stopped VM running the tiny guest on the session daemon."""

    def make(prefix: str = "g") -> VM:
        return vms(host.vms.create(guest_spec(unique_name(prefix), guest_image)))

    return make
