"""The VMSpec a backup (an archive or a restore point) becomes on a target host: its
hardware, mapped to what the target can express, and its disks as the images a restore
just wrote. Archives and restore points share it, so both restore alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from anyvirt.errors import NotFound
from anyvirt.migration.manifest import Manifest
from anyvirt.migration.networks import NetworkRule
from anyvirt.model import DiskSpec, Firmware, NicSpec, VMSpec

if TYPE_CHECKING:
    from anyvirt.host import Host


def nics_for(host: Host, manifest: Manifest, networks: Mapping[str, str] | None) -> list[NicSpec]:
    """The NICs on ``host``, placed by the rule moves use (``InvalidSpec`` for a network the
    host lacks and ``networks`` does not map); call it before writing any disk. A MAC is
    kept only where the target's platform accepts it and no VM there uses it (a restore
    beside the original must not clone its address onto the same network)."""
    rule = NetworkRule.for_target(host, networks)
    prefixes = host.driver.mac_prefixes
    taken = _macs_in_use(host) if any(n.mac for n in manifest.nics) else set()
    out = []
    for n, nic in enumerate(manifest.nics):
        network, _how = rule.place(nic.id or f"#{n}", nic.network)
        mac = nic.mac
        if mac is not None and ((prefixes is not None and not mac.startswith(prefixes))
                                or mac.lower() in taken):
            mac = None
        out.append(NicSpec(network=network, mac=mac,
                           model=nic.model if nic.model in host.driver.nic_models else None))
    return out


def spec_for(host: Host, manifest: Manifest, name: str, images: Sequence[Path],
             nics: Sequence[NicSpec], *, image_format: str | None = None) -> VMSpec:
    """The spec, with ``nics`` from :func:`nics_for`. Every disk names its image's format,
    so no import probes it (a raw guest disk may start with any image's header):
    ``image_format`` where the caller wrote the images itself (a restore point's disks
    are raw guest bytes), else each manifest disk's own (an archive's members, checked
    against it when extracted)."""
    buses = host.driver.disk_buses
    disks = [DiskSpec(image=str(image), size_gib=entry.size_bytes / 1024**3,
                      format=image_format or entry.format,
                      # a bus the target lacks becomes its first choice, as moves do
                      bus=entry.bus if entry.bus in buses else (buses[0] if entry.bus else None))
             for entry, image in zip(manifest.disks, images, strict=True)]
    return VMSpec(name=name, cpus=manifest.cpus, memory_mib=manifest.memory_mib, disks=disks,
                  nics=list(nics), firmware=Firmware(manifest.firmware),
                  guest_os=manifest.guest_os, description=manifest.description)


def _macs_in_use(host: Host) -> set[str]:
    taken: set[str] = set()
    for vm in host.vms.list():
        try:
            taken.update(n.mac.lower() for n in vm.info().nics if n.mac)
        except NotFound:  # deleted since the listing
            continue
    return taken


__all__ = ["nics_for", "spec_for"]
