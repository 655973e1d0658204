"""The libvirt testbed: isolated, real ``libvirtd`` daemons with real QEMU guests.

* :mod:`anyvirt_libvirt.testbed.daemon`: :class:`LibvirtDaemon` and
  :func:`start_daemons` (needs root and Debian's libvirt + QEMU packages).
* :mod:`anyvirt_libvirt.testbed.network`: an isolated libvirt network (DHCP, no
  forwarding) for a daemon started with ``private_network=True``.
* :mod:`anyvirt_libvirt.testbed.linux_guest`: a real Linux guest (Debian's kernel and
  ``busybox-static``) that applies a NoCloud seed, runs DHCP and reports both on its console.
* :mod:`anyvirt_libvirt.testbed.fixtures`: pytest fixtures, opted into with
  ``pytest_plugins = ["anyvirt_libvirt.testbed.fixtures"]``.
* :data:`TESTBED`: ``anyvirt testbed libvirt [--count 2]``, registered under
  the ``anyvirt.testbeds`` entry-point group (:mod:`anyvirt.testbeds`).

The bootable guest the tests use is public: :mod:`anyvirt_libvirt.demo_image`.
"""

from __future__ import annotations

from anyvirt.testbeds import RunningTestbed, Testbed, TestbedOption
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon, LibvirtTestbedError, start_daemons

__all__ = ["TESTBED", "LibvirtDaemon", "LibvirtTestbed", "LibvirtTestbedError", "start_daemons"]


class LibvirtTestbed:
    """``anyvirt testbed libvirt``: one or two daemons that can live-migrate to each other."""

    __test__ = False  # not a pytest test class, whatever its name

    summary = "Start isolated libvirtd daemons (needs root and Debian's libvirt + QEMU packages)."
    options = (
        TestbedOption("count", "Daemons to start (two can live-migrate to each other).",
                      default=1, minimum=1, maximum=2),
    )

    def start(self, count: int = 1) -> RunningTestbed:
        daemons = start_daemons(count)

        def stop() -> None:
            for daemon in daemons:
                daemon.stop()

        return RunningTestbed(uris=tuple(d.anyvirt_uri for d in daemons), stop=stop)


TESTBED: Testbed = LibvirtTestbed()
"""Registered under the ``anyvirt.testbeds`` entry-point group (typed: mypy checks the protocol)."""
