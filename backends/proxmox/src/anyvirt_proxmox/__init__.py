"""anyvirt backend for Proxmox VE (QEMU VMs of a cluster, over the PVE HTTP API).
``ProxmoxExtensions`` and ``ProxmoxBackups`` (PVE's own vzdump backups) are its typed
extension namespaces."""

from anyvirt_proxmox.backups import NativeBackup
from anyvirt_proxmox.driver import ProxmoxBackups, ProxmoxDriver, ProxmoxExtensions

__all__ = ["NativeBackup", "ProxmoxBackups", "ProxmoxDriver", "ProxmoxExtensions"]
