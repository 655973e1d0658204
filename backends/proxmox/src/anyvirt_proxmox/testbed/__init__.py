"""The Proxmox VE testbed: fakepve (a fake of the PVE API, test tool) in its own process.

``anyvirt testbed proxmox`` is :data:`TESTBED`, registered under the
``anyvirt.testbeds`` entry point; :class:`FakePveTestbed` is the same from
Python, and :mod:`anyvirt_proxmox.testbed.fixtures` has pytest fixtures.
"""

from __future__ import annotations

import subprocess

from anyvirt.testbeds import RunningTestbed, TestbedOption
from anyvirt_proxmox.testbed.fakepve import HOST, USER, FakePveTestbed, guests_file, make_certificate

__all__ = ["HOST", "TESTBED", "USER", "FakePveTestbed", "ProxmoxTestbed", "guests_file", "make_certificate"]


class ProxmoxTestbed:
    """What ``anyvirt.testbeds`` finds under ``proxmox`` (see that module for the protocol)."""

    summary = "Start fakepve (a fake Proxmox VE API, test tool) as a cluster on a loopback port."
    options = (
        TestbedOption("nodes", "Nodes of the simulated cluster.", 3, minimum=1, maximum=64),
        TestbedOption("guests", "VMs to generate, spread over the nodes.", 0, minimum=0, maximum=100_000),
    )

    def start(self, nodes: int = 3, guests: int = 0) -> RunningTestbed:
        try:
            bed = FakePveTestbed(nodes=nodes, guests=guests).start()
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeError(f"fakepve did not start: {exc}") from exc
        return RunningTestbed(uris=(bed.uri,), stop=bed.stop, environment={"ANYVIRT_PASSWORD": bed.password})


TESTBED = ProxmoxTestbed()
