"""The hostile suite's targets (memory://, a real libvirtd, vcsim, fakepve), from ``hostile_support``."""

from hostile_support import (  # noqa: F401 - fixtures, found by pytest by their names here
    libvirt_daemon,
    libvirt_target,
    memory_target,
    proxmox_target,
    proxmox_testbed,
    target,
    vcsim_vcenter,
    vsphere_target,
)
