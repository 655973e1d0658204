"""The anyvirt contract suite, run against a real libvirtd with real guests and
against libvirt's in-process ``test:///default`` driver."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon

import anyvirt
from anyvirt.host import Host
from anyvirt.model import DiskSpec, NicSpec, VMSpec
from anyvirt.testing.suite import *  # noqa: F403


@pytest.fixture(scope="module", params=["daemon", "test-driver"])
def _backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def _test_driver_host() -> Iterator[Host]:
    """``test:///default`` for the module (its state lives while a connection is open).

    The driver ships a domain "test" of 8 GiB on a host of 3 GiB: already past
    any memory overcommit limit, so it is removed first.
    """
    with anyvirt.connect("libvirt+test:///default") as host:
        builtin = host.vms.get("test")
        builtin.stop(force=True)
        builtin.delete(disks=False)
        yield host


@pytest.fixture
def anyvirt_host(_backend: str, request: pytest.FixtureRequest) -> Host:
    if _backend == "daemon":
        pair: tuple[Host, Host] = request.getfixturevalue("pair")
        return pair[0]
    host: Host = request.getfixturevalue("_test_driver_host")
    return host


@pytest.fixture
def anyvirt_vm_spec(_backend: str, request: pytest.FixtureRequest) -> Callable[[str], VMSpec]:
    if _backend == "daemon":
        spec_for: Callable[[str], VMSpec] = request.getfixturevalue("spec_for")
        return spec_for
    # the test driver runs nothing and imports no images: a blank disk in its pool,
    # and a NIC on its "default" network
    return lambda name: VMSpec(name=name, cpus=1, memory_mib=16,
                               disks=[DiskSpec(size_gib=0.01)], nics=[NicSpec()])


@pytest.fixture
def anyvirt_migration_target(_backend: str, request: pytest.FixtureRequest) -> Host:
    pair: tuple[Host, Host] = request.getfixturevalue("pair")
    return pair[1]


@pytest.fixture
def anyvirt_unreachable_host(_backend: str, request: pytest.FixtureRequest) -> Iterator[Host]:
    """The first daemon through another URI (its socket spelled another way): one host
    UUID, which libvirt never migrates to."""
    if _backend != "daemon":
        pytest.skip("libvirt's test driver declares no migration")
    daemons: tuple[LibvirtDaemon, LibvirtDaemon] = request.getfixturevalue("libvirt_daemon_pair")
    socket = daemons[0].socket_path
    with anyvirt.connect("libvirt+qemu+unix:///system?socket="
                         f"{quote(str(socket.parent), safe='/')}/./{quote(socket.name)}") as same:
        yield same


def test_daemon_pair_is_separate(libvirt_daemon_pair: tuple[LibvirtDaemon, LibvirtDaemon]) -> None:
    first, second = libvirt_daemon_pair
    assert first.host_uuid != second.host_uuid
