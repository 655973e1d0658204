"""The VMSpec a restore point becomes on a target host: its hardware, mapped to what the
target can express, and its disks as the images a restore just wrote."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from anyvirt.errors import NotFound
from anyvirt.migration.manifest import Manifest
from anyvirt.model import DiskSpec, Firmware, NicSpec, VMSpec

if TYPE_CHECKING:
    from anyvirt.host import Host


def spec_for(host: Host, manifest: Manifest, name: str, images: Sequence[Path]) -> VMSpec:
    buses = host.driver.disk_buses
    disks = [DiskSpec(image=str(image), size_gib=entry.size_bytes / 1024**3,
                      # a bus the target lacks becomes its first choice, as moves do
                      bus=entry.bus if entry.bus in buses else (buses[0] if entry.bus else None))
             for entry, image in zip(manifest.disks, images, strict=True)]
    return VMSpec(name=name, cpus=manifest.cpus, memory_mib=manifest.memory_mib, disks=disks,
                  nics=_nics(host, manifest), firmware=Firmware(manifest.firmware),
                  guest_os=manifest.guest_os, description=manifest.description)


def _nics(host: Host, manifest: Manifest) -> list[NicSpec]:
    """Networks the host lacks become its default; a MAC is kept only where the target's
    platform accepts it and no VM there uses it (a restore beside the original must not
    clone its address onto the same network)."""
    networks = set(host.info().networks)
    prefixes = host.driver.mac_prefixes
    taken = _macs_in_use(host) if any(n.mac for n in manifest.nics) else set()
    out = []
    for nic in manifest.nics:
        mac = nic.mac
        if mac is not None and ((prefixes is not None and not mac.startswith(prefixes))
                                or mac.lower() in taken):
            mac = None
        out.append(NicSpec(network=nic.network if nic.network in networks else None, mac=mac,
                           model=nic.model if nic.model in host.driver.nic_models else None))
    return out


def _macs_in_use(host: Host) -> set[str]:
    taken: set[str] = set()
    for vm in host.vms.list():
        try:
            taken.update(n.mac.lower() for n in vm.info().nics if n.mac)
        except NotFound:  # deleted since the listing
            continue
    return taken


__all__ = ["spec_for"]
