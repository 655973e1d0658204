"""The hostile suite's targets (memory://, a real libvirtd, vcsim), from ``hostile_support``."""

from hostile_support import (  # noqa: F401 - fixtures, found by pytest by their names here
    libvirt_daemon,
    libvirt_target,
    memory_target,
    target,
    vcsim_vcenter,
    vsphere_target,
)
