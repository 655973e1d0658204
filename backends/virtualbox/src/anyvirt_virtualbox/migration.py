"""Cold migration to another VirtualBox home: OVA out of the source, import into the target.

VirtualBox has no migration between hosts of its own, so a stopped VM
travels as an appliance: ``export`` writes an OVA into a temporary directory
(removed afterwards), the target ``import``s it under the same name keeping
every MAC, the copy is read back and compared (disk count and sizes, CPUs,
memory, firmware, MACs), and only then is the source unregistered and deleted.
Deleting it is the move's point of no return (``job.commit``): a move cancelled
or past its deadline before it removes its copy and keeps the source; after it,
the move runs to its end and reports success, however late.

``import`` always gives the new machine (and its disks) new UUIDs: VBoxManage
7.2 has no option to keep them, so the VM's id changes; the returned
MigrationResult carries the new id and the gate's handle follows it.

Any failure, at any step, removes whatever the import made on the target and
leaves the source as it was (the source is only ever read until the copy has
been verified). OVA carries no snapshots: the gate refuses a VM that has any
(COLD_MIGRATION_SNAPSHOTS is not declared) before anything is sent.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from anyvirt.errors import AnyvirtError, TaskFailed
from anyvirt.model import MigrationResult, VMInfo
from anyvirt.tasks import Job
from anyvirt_virtualbox import listings, machines
from anyvirt_virtualbox.runner import VBoxManage

STEP_TIMEOUT = 3600.0  # seconds: an export or import of big disks takes long, never forever


def migrate(source: VBoxManage, vm_id: str, target: VBoxManage, node: str,
            source_uri: str, target_uri: str, job: Job) -> MigrationResult:
    started = time.monotonic()
    before = machines.describe(source, vm_id, node)
    work = Path(tempfile.mkdtemp(prefix="anyvirt-vbox-move-"))
    try:
        ova = work / "vm.ova"
        job.progress(0.0, f"exporting {before.name!r} as OVA")
        source.run(["export", vm_id, "--output", str(ova)], f"exporting {before.name!r}",
                   timeout=job.remaining(STEP_TIMEOUT))
        sent = ova.stat().st_size
        job.check()
        job.progress(40.0, f"importing {before.name!r} on the target")
        after = _import_verified(target, ova, before, node, job)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    job.progress(90.0, f"removing {before.name!r} from the source")
    try:
        job.commit(f"deleting the source of {before.name!r}")
    except BaseException:
        _remove(target, after.id)  # stopped before the point of no return: the source stays
        raise
    warnings = [f"VirtualBox gives an imported VM a new id: {vm_id} is now {after.id}"]
    try:
        source.run(["unregistervm", vm_id, "--delete"], f"deleting the source of {before.name!r}",
                   timeout=job.remaining(STEP_TIMEOUT))
    except BaseException as error:
        if _still_registered(source, vm_id):
            _remove(target, after.id)  # the source stands as it was: two copies would be worse
            raise
        # unregistered, but not every file went: the verified copy is the VM now
        warnings.append(f"some of the source's files may be left behind: {error}")
    return MigrationResult(
        vm_id=after.id, vm_name=after.name, source=source_uri, target=target_uri, live=False,
        duration_s=round(time.monotonic() - started, 3), bytes_transferred=sent,
        warnings=tuple(warnings),
        verified=("config", "disk sizes", "macs"),
    )


def _import_verified(target: VBoxManage, ova: Path, before: VMInfo, node: str, job: Job) -> VMInfo:
    """Import ``ova`` as ``before.name`` and prove it matches ``before``; on any failure
    remove what the import made."""
    known = _vm_ids(target, before.name)
    try:
        target.run(
            ["import", str(ova), "--vsys", "0", "--vmname", before.name, "--options", "keepallmacs"],
            f"importing {before.name!r}", timeout=job.remaining(STEP_TIMEOUT),
        )
        arrived = _vm_ids(target, before.name) - known
        if len(arrived) != 1:
            raise TaskFailed(f"importing {before.name!r} registered {len(arrived)} VMs, not one")
        after = machines.describe(target, arrived.pop(), node)
        job.check()
        differences = compare(before, after)
        if differences:
            raise TaskFailed(f"the copy of {before.name!r} on the target differs from its source: "
                             + "; ".join(differences))
        return after
    except BaseException:
        # only what this import registered (new, and of this name, which the gate holds on
        # the target): never a VM that was there before
        for vm_id in _vm_ids(target, before.name) - known:
            _remove(target, vm_id)
        raise


def _vm_ids(vbox: VBoxManage, name: str) -> set[str]:
    listed = listings.list_vms(vbox.run(["list", "vms"], "listing VMs").stdout)
    return {vm.uuid for vm in listed if vm.name == name}


def compare(before: VMInfo, after: VMInfo) -> list[str]:
    """What the target's copy does not have of its source (empty: it is the same machine)."""
    out = []
    if (after.cpus, after.memory_mib) != (before.cpus, before.memory_mib):
        out.append(f"{after.cpus} CPUs / {after.memory_mib} MiB, not {before.cpus} / {before.memory_mib}")
    if after.firmware is not before.firmware:
        out.append(f"{after.firmware.value} firmware, not {before.firmware.value}")
    sizes_before = [d.size_bytes for d in before.disks]
    sizes_after = [d.size_bytes for d in after.disks]
    if sizes_after != sizes_before:
        out.append(f"disks of {sizes_after} bytes, not {sizes_before}")
    macs_before = [n.mac for n in before.nics]
    macs_after = [n.mac for n in after.nics]
    if macs_after != macs_before:
        out.append(f"MACs {macs_after}, not {macs_before}")
    return out


def _still_registered(vbox: VBoxManage, vm_id: str) -> bool:
    """Whether the source VM is certainly still there (unknown: no, so the copy is kept,
    since losing both would be the one outcome worse than two copies)."""
    try:
        listed = listings.list_vms(vbox.run(["list", "vms"], "listing VMs").stdout)
    except AnyvirtError:
        return False
    return vm_id.lower() in {vm.uuid for vm in listed}


def _remove(target: VBoxManage, ref: str) -> None:
    """Unregister and delete the target's copy (and its disks)."""
    with contextlib.suppress(AnyvirtError):  # nothing registered: nothing to remove
        target.run(["unregistervm", ref, "--delete"], f"removing the partial copy {ref!r}",
                   timeout=600.0)
