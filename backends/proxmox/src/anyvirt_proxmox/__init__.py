"""anyvirt backend for Proxmox VE (QEMU VMs of a cluster, over the PVE HTTP API)."""
