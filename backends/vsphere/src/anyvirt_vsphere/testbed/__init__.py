"""The vSphere testbed: vcsim, VMware's vSphere API simulator, built from Debian's source.

* :mod:`anyvirt_vsphere.testbed.vcsim`: :class:`Vcsim` and :func:`build_vcsim`
  (needs Debian's ``golang-go golang-github-vmware-govmomi-dev``); the Go
  ``main`` and our patches to the simulator are package data beside it.
* :mod:`anyvirt_vsphere.testbed.fixtures`: pytest fixtures, opted into with
  ``pytest_plugins = ["anyvirt_vsphere.testbed.fixtures"]``.
* :data:`TESTBED`: ``anyvirt testbed vsphere [--esx]``, registered under the
  ``anyvirt.testbeds`` entry-point group (:mod:`anyvirt.testbeds`).
"""

from __future__ import annotations

import secrets

from anyvirt.testbeds import RunningTestbed, Testbed, TestbedOption
from anyvirt_vsphere.testbed.vcsim import Vcsim, VcsimBuildError, VcsimStartError, build_vcsim

__all__ = ["TESTBED", "Vcsim", "VcsimBuildError", "VcsimStartError", "VsphereTestbed", "build_vcsim"]


class VsphereTestbed:
    """``anyvirt testbed vsphere``: one simulated vCenter (or ESXi host) with a throwaway password."""

    __test__ = False  # not a pytest test class, whatever its name

    summary = "Build (first time: about 15 s) and start vcsim, VMware's vSphere API simulator."
    options = (
        TestbedOption("esx", "Simulate a standalone ESXi host instead of a vCenter.", default=False),
        TestbedOption("vms", "VMs per resource pool in the simulated inventory.", default=2, minimum=0),
        TestbedOption("hosts", "Hosts per cluster (vCenter mode).", default=3, minimum=1),
    )

    def start(self, esx: bool = False, vms: int = 2, hosts: int = 3) -> RunningTestbed:
        # a fresh password per run, printed once, for this simulator only
        sim = Vcsim(esx=esx, vms=vms, hosts=hosts, password=secrets.token_urlsafe(12)).start()
        return RunningTestbed(uris=(sim.anyvirt_uri,), stop=sim.stop,
                              environment={"ANYVIRT_PASSWORD": sim.password})


TESTBED: Testbed = VsphereTestbed()
"""Registered under the ``anyvirt.testbeds`` entry-point group (typed: mypy checks the protocol)."""
