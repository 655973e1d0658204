"""The real testbeds' session fixtures, shared by every test module here that asks for them.

Imported rather than named in ``pytest_plugins`` (pytest accepts that only in the
rootdir's conftest). One libvirtd, one vcsim and one fakepve then serve the tour tests and the
command-line tests alike, instead of one per module.
"""

from __future__ import annotations

from anyvirt_libvirt.testbed.fixtures import libvirt_daemon
from anyvirt_proxmox.testbed.fixtures import proxmox_testbed
from anyvirt_vsphere.testbed.fixtures import vcsim_vcenter

__all__ = ["libvirt_daemon", "proxmox_testbed", "vcsim_vcenter"]
