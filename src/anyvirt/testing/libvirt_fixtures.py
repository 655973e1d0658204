"""pytest fixtures that start real, isolated libvirt daemons and build the test guest.

Use from a conftest::

    pytest_plugins = ["anyvirt.testing.libvirt_fixtures"]

* ``libvirt_daemon``: one :class:`~anyvirt.testing.libvirt_testbed.LibvirtDaemon`
  for the whole session. Tests share it: undefine what you define.
* ``libvirt_daemon_pair``: two more daemons (``a``/``b``) that can live-migrate
  to each other, for the session.
* ``guest_image``: the pristine raw image of the tiny test guest
  (:mod:`anyvirt.testing.guest`); copy it per VM, the guest writes to its disk.

Daemons are stopped, with every QEMU they started, when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anyvirt.testing.guest import build_guest_image
from anyvirt.testing.libvirt_testbed import LibvirtDaemon, start_daemons

__all__ = ["guest_image", "libvirt_daemon", "libvirt_daemon_pair"]


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
    return build_guest_image(tmp_path_factory.mktemp("anyvirt-guest"))
