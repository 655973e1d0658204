"""pytest fixtures that start real, isolated libvirt daemons and build the demo guest.

Nothing here is active until a project opts in, from its root conftest::

    pytest_plugins = ["anyvirt_libvirt.testbed.fixtures"]

or, in a conftest below the rootdir (where pytest refuses ``pytest_plugins``),
by importing the fixtures it wants (``from anyvirt_libvirt.testbed.fixtures
import libvirt_daemon``).

* ``libvirt_daemon``: one :class:`~anyvirt_libvirt.testbed.daemon.LibvirtDaemon`
  for the whole session. Tests share it: undefine what you define.
* ``libvirt_daemon_pair``: two more daemons (``a``/``b``) that can live-migrate
  to each other, for the session.
* ``libvirt_isolated_daemon``: ``(daemon, network)``, a daemon in a network
  namespace of its own with an isolated libvirt network (DHCP, no forwarding)
  started (:mod:`anyvirt_libvirt.testbed.network`), for tests whose guests
  need a network.
* ``linux_guest``: the real Linux test guest
  (:mod:`anyvirt_libvirt.testbed.linux_guest`), for tests of what a guest
  applies (seed, DHCP).
* ``linux_guest_disk``: the same guest on a BIOS-bootable qcow2 disk
  (:mod:`~anyvirt_libvirt.testbed.linux_guest.bootdisk`), for VMs made through
  the API (``DiskSpec(image=...)``); a cached base: import or overlay it, never write it.
* ``guest_image``: the pristine raw image of the tiny demo guest
  (:mod:`anyvirt_libvirt.demo_image`); copy it per VM, the guest writes to its disk.

Each is session-scoped and starts nothing until a test asks for it. Daemons
are stopped, with every QEMU they started, when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anyvirt_libvirt.demo_image import build_image
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon, start_daemons
from anyvirt_libvirt.testbed.linux_guest import LinuxGuest, build_linux_guest
from anyvirt_libvirt.testbed.linux_guest.bootdisk import build_boot_disk
from anyvirt_libvirt.testbed.network import IsolatedNetwork, start_isolated_network

__all__ = ["guest_image", "libvirt_daemon", "libvirt_daemon_pair", "libvirt_isolated_daemon", "linux_guest",
           "linux_guest_disk"]


@pytest.fixture(scope="session")
def libvirt_daemon() -> Iterator[LibvirtDaemon]:
    """A running isolated libvirtd shared by the session (``daemon.uri``, ``daemon.anyvirt_uri``)."""
    daemon = LibvirtDaemon(name="session").start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def libvirt_daemon_pair() -> Iterator[tuple[LibvirtDaemon, LibvirtDaemon]]:
    """Two running daemons with distinct host UUIDs and migration ports."""
    first, second = start_daemons(2)
    try:
        yield first, second
    finally:
        try:
            first.stop()
        finally:
            second.stop()


@pytest.fixture(scope="session")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the pristine guest image (raw, 1 MiB); a template to copy, not to boot."""
    return build_image(tmp_path_factory.mktemp("anyvirt-guest"))


@pytest.fixture(scope="session")
def libvirt_isolated_daemon() -> Iterator[tuple[LibvirtDaemon, IsolatedNetwork]]:
    """A daemon in a network namespace of its own, with the isolated network (DHCP) started.

    Guests on ``network.name`` get leases from its dnsmasq; nothing of it is
    seen in the machine's own network namespace.
    """
    daemon = LibvirtDaemon(name="isolated", private_network=True).start()
    try:
        conn = daemon.open()
        try:
            network = start_isolated_network(conn)
        finally:
            conn.close()
        yield daemon, network
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def linux_guest() -> LinuxGuest:
    """The Linux test guest's kernel and initramfs (built once per machine, then cached)."""
    return build_linux_guest()


@pytest.fixture(scope="session")
def linux_guest_disk(linux_guest: LinuxGuest) -> Path:
    """The Linux test guest's boot disk (qcow2, cached beside the guest)."""
    return build_boot_disk(linux_guest)
