"""anyvirt backend for Proxmox VE (QEMU VMs of a cluster, over the PVE HTTP API).
``ProxmoxExtensions`` is its typed extension namespace."""

from anyvirt_proxmox.driver import ProxmoxDriver, ProxmoxExtensions

__all__ = ["ProxmoxDriver", "ProxmoxExtensions"]
