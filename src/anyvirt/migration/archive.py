"""Backups as portable archives (``.avbk``): restore them on any backend.

An archive is a tar file: ``manifest.json`` (the neutral hardware
description, the same one cross-platform moves use) then one file per disk,
in whatever qemu-img format the source exported. Files stream in and out;
disks are never held in memory.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from anyvirt.errors import AlreadyExists, InvalidSpec, TaskFailed
from anyvirt.kit import qemu_img
from anyvirt.model import (
    Capability,
    DiskSpec,
    ExportedDisk,
    Firmware,
    NicSpec,
    VMSpec,
    check_name,
)
from anyvirt.tasks import DEFAULT_TIMEOUT, Job

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.vm import VM

FORMAT = "anyvirt-backup/1"
MANIFEST = "manifest.json"


def backup(vm: VM, path: str | Path, *, timeout: float | None = DEFAULT_TIMEOUT) -> Path:
    """Write ``vm`` (configuration and disks) to the archive ``path``. The VM must be stopped."""
    vm.host.gate.require(Capability.DISK_EXPORT)
    dest = Path(path)
    if dest.exists():
        raise AlreadyExists(f"{dest} exists already")
    if not dest.parent.is_dir():
        raise InvalidSpec(f"cannot write {dest}: the directory {dest.parent} does not exist")
    info = vm.info()

    def work(job: Job) -> Path:
        with tempfile.TemporaryDirectory(prefix="anyvirt-backup-") as tmp:
            exported = [compact(d, job) for d in vm.host.driver.export_disks(vm.id, Path(tmp), job)]
            disk_entries = [
                {"id": d.id, "file": f"disks/{i}-{d.id}.{d.format}", "format": d.format,
                 "size_bytes": d.size_bytes, "bus": d.bus}
                for i, d in enumerate(exported)
            ]
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source": {"backend": vm.host.backend, "uri": vm.host.uri},
                "vm": {
                    "name": info.name, "cpus": info.cpus, "memory_mib": info.memory_mib,
                    "firmware": info.firmware.value, "guest_os": info.guest_os,
                    "description": info.description,
                    "nics": [attrs.asdict(n) for n in info.nics],
                },
                "disks": disk_entries,
            }
            partial = dest.with_name(dest.name + ".partial")
            try:
                with tarfile.open(partial, "w") as tar:
                    _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
                    for entry, disk in zip(disk_entries, exported, strict=True):
                        job.check()
                        tar.add(disk.path, arcname=str(entry["file"]))
                partial.rename(dest)
            finally:
                partial.unlink(missing_ok=True)
        return dest

    # the gate holds the VM (its disks cannot change while copied) and checks its state
    result = vm.host.gate.export(vm, "back up", work, wait=True, timeout=timeout)
    assert isinstance(result, Path)
    return result


def compact(disk: ExportedDisk, job: Job) -> ExportedDisk:
    """Raw exports become qcow2 before archiving: tar keeps no holes, qcow2 stores no zeros.
    Without qemu-img the raw file goes in as it is."""
    if disk.format != "raw" or not qemu_img.available():
        return disk
    out = Path(disk.path).with_suffix(".qcow2")
    try:
        qemu_img.convert(disk.path, out, source_format="raw", format="qcow2", job=job)
    except TaskFailed as exc:
        raise TaskFailed(f"qemu-img could not compact disk {disk.id}: {exc}") from exc
    Path(disk.path).unlink()
    return attrs.evolve(disk, path=str(out), format="qcow2")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mtime = int(time.time())
    tar.addfile(member, io.BytesIO(data))


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with tarfile.open(path, "r") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise InvalidSpec(f"{path} has no {MANIFEST}")
            manifest: dict[str, Any] = json.load(member)
    except (tarfile.TarError, KeyError, json.JSONDecodeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidSpec(f"{path} is not an anyvirt backup: {reason}") from exc
    if manifest.get("format") != FORMAT:
        raise InvalidSpec(f"{path} has format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


def restore(host: Host, path: str | os.PathLike[str], *, name: str | None = None,
            timeout: float | None = DEFAULT_TIMEOUT) -> VM:
    """Create a VM on ``host`` from the archive ``path`` (from any backend)."""
    manifest = read_manifest(path)
    vm_data = manifest["vm"]
    new_name = check_name(vm_data["name"] if name is None else name, "name")
    # before unpacking what may be many GiB of disks: capability, name, capacity
    host.gate.check_restore(new_name, vm_data["cpus"], vm_data["memory_mib"],
                            with_images=bool(manifest["disks"]))
    with tempfile.TemporaryDirectory(prefix="anyvirt-restore-") as tmp:
        with tarfile.open(path, "r") as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, '..', devices and links
        disks = []
        for entry in manifest["disks"]:
            file = Path(tmp) / entry["file"]
            if not file.is_file():
                raise InvalidSpec(f"{path} lacks {entry['file']}")
            _check_disk(file, entry, path)
            size = entry.get("size_bytes")
            bus = entry.get("bus")
            # a bus the target cannot express becomes its first choice, as in plan_migration
            if bus not in host.driver.disk_buses:
                bus = host.driver.disk_buses[0] if bus else None
            disks.append(DiskSpec(image=str(file), bus=bus, size_gib=size / 1024**3 if size else None))
        nics = [NicSpec(network=n.get("network"), model=n.get("model"), mac=n.get("mac"))
                for n in vm_data.get("nics", [])]
        spec = VMSpec(
            name=new_name, cpus=vm_data["cpus"], memory_mib=vm_data["memory_mib"], disks=disks,
            nics=_usable_nics(host, nics), firmware=Firmware(vm_data.get("firmware", "bios")),
            guest_os=vm_data.get("guest_os") or "other", description=vm_data.get("description", ""),
        )
        return host.vms.create(spec, timeout=timeout)


def _check_disk(file: Path, entry: dict[str, Any], archive: str | os.PathLike[str]) -> None:
    """A disk from an archive is untrusted: in its declared format, pointing at no other file
    (a backing file, an extent) or server, before any host sees it."""
    declared = entry.get("format")
    if declared not in qemu_img.FORMATS:
        raise InvalidSpec(f"{archive}: disk {entry['file']} has format {declared!r}, "
                          f"not one of {', '.join(qemu_img.FORMATS)}")
    if qemu_img.available():
        try:
            qemu_img.inspect_untrusted(file, format=declared)
        except InvalidSpec as exc:
            raise InvalidSpec(f"{archive}: disk {entry['file']} is refused: {exc}") from exc


def _usable_nics(host: Host, nics: list[NicSpec]) -> list[NicSpec]:
    """Keep networks the host has; others fall back to its default network."""
    networks = set(host.info().networks)
    prefixes = host.driver.mac_prefixes
    # restoring next to the original (a copy, a test restore) must not clone its MAC onto
    # the same network; a VM restored where its MAC is free keeps it (DHCP leases, licences)
    taken = _macs_in_use(host) if any(n.mac for n in nics) else set()
    out = []
    for nic in nics:
        mac = nic.mac if prefixes is None or (nic.mac or "").startswith(prefixes) else None
        if mac is not None and mac.lower() in taken:
            mac = None
        out.append(attrs.evolve(nic, network=nic.network if nic.network in networks else None,
                                mac=mac, model=nic.model if nic.model in host.driver.nic_models else None))
    return out


def _macs_in_use(host: Host) -> set[str]:
    from anyvirt.errors import NotFound

    taken: set[str] = set()
    for vm in host.vms.list():
        try:
            taken.update(n.mac.lower() for n in vm.info().nics if n.mac)
        except NotFound:  # deleted since the listing
            continue
    return taken


__all__ = ["backup", "read_manifest", "restore"]
