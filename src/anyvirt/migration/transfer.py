"""Moving a VM to another platform: guard, export, convert, import, verify, then (if asked)
remove the source. The source is never touched until the copy is verified."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import evolve

from anyvirt.errors import AnyvirtError, TaskFailed
from anyvirt.migration.plan import MigrationPlan, plan_migration
from anyvirt.model import DiskSpec, ExportedDisk, MigrationResult, PowerState
from anyvirt.tasks import DEFAULT_TIMEOUT, Job, ProgressCallback

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.vm import VM


def export(vm: VM, dest: Path, job: Job) -> dict[str, ExportedDisk]:
    """The VM's disks as local files, by disk id."""
    disks = vm.host.driver.export_disks(vm.id, dest, job)
    return {d.id: d for d in disks}


def spec_with_images(plan: MigrationPlan, exported: dict[str, ExportedDisk]) -> Any:
    disks = []
    for disk_id, planned in zip(plan.disk_ids, plan.spec.disks, strict=True):
        if disk_id not in exported:
            raise TaskFailed(f"the export gave no file for disk {disk_id}")
        out = exported[disk_id]
        size_gib = out.size_bytes / (1024**3) if out.size_bytes else None
        disks.append(DiskSpec(image=out.path, size_gib=size_gib, bus=planned.bus))
    return evolve(plan.spec, disks=disks)


def verify(new: VM, plan: MigrationPlan) -> None:
    """The copy must be what the plan said: CPUs, memory, disks, NICs (and kept MACs)."""
    info = new.info()
    spec = plan.spec
    problems = []
    if (info.cpus, info.memory_mib) != (spec.cpus, spec.memory_mib):
        problems.append(f"cpus/memory {info.cpus}/{info.memory_mib} != {spec.cpus}/{spec.memory_mib}")
    if len(info.disks) != len(spec.disks):
        problems.append(f"{len(info.disks)} disks, expected {len(spec.disks)}")
    for src, dst in zip(plan.source.disks, info.disks, strict=False):
        if src.size_bytes and dst.size_bytes and dst.size_bytes < src.size_bytes:
            problems.append(f"disk {dst.id} is {dst.size_bytes} bytes, smaller than {src.size_bytes}")
    if len(info.nics) != len(spec.nics):
        problems.append(f"{len(info.nics)} NICs, expected {len(spec.nics)}")
    kept = {n.mac for n in spec.nics if n.mac}
    if kept - {n.mac for n in info.nics}:
        problems.append("a kept MAC address is missing on the copy")
    if problems:
        raise TaskFailed(f"the copy of {plan.source.name!r} does not match: " + "; ".join(problems))


def migrate(
    vm: VM,
    to: Host,
    *,
    name: str | None = None,
    shutdown: bool = False,
    delete_source: bool = False,
    start: bool | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    on_progress: ProgressCallback | None = None,
) -> MigrationResult:
    """Move ``vm`` to ``to``, a host of another platform (or the same one: a cold copy).

    The VM must be stopped (``shutdown=True`` stops it gracefully first). The
    source is removed only with ``delete_source=True`` and only after the copy
    is verified; a failed copy is removed again. ``start`` defaults to
    starting the copy if the source was running.
    """
    started = time.monotonic()
    plan = plan_migration(vm, to, name=name)
    was_running = vm.refresh().state is PowerState.RUNNING
    if was_running and shutdown:
        vm.stop(timeout=min(timeout or 300.0, 300.0))

    def work(job: Job) -> MigrationResult:
        with tempfile.TemporaryDirectory(prefix="anyvirt-move-") as tmp:
            job.progress(5, f"exporting the disks of {vm.name}")
            exported = export(vm, Path(tmp), job)
            spec = spec_with_images(plan, exported)
            job.progress(50, f"importing into {to.backend}")
            new = to.vms.create(spec, timeout=job.remaining())
            try:
                job.progress(90, "verifying the copy")
                verify(new, plan)
                if start or (start is None and was_running):
                    new.start(timeout=job.remaining())
            except BaseException:
                with contextlib.suppress(AnyvirtError):
                    new.refresh()
                    if new.state is not PowerState.STOPPED:
                        new.stop(force=True)
                    new.delete(disks=True)
                raise
            moved = sum(d.size_bytes for d in exported.values())
        return MigrationResult(
            vm_id=new.id, vm_name=new.name, source=plan.source_uri, target=plan.target_uri,
            live=False, duration_s=round(time.monotonic() - started, 3), downtime_ms=None,
            bytes_transferred=moved, warnings=plan.warning_codes,
        )

    # the source is held through the copy (the gate's export rule: not running, one
    # change at a time); it is removed only once the copy is verified and the hold is over
    result = vm.host.gate.export(vm, f"move to {to.backend}", work, wait=True, timeout=timeout,
                                 on_progress=on_progress)
    assert isinstance(result, MigrationResult)
    if delete_source:
        vm.delete(disks=True)
    return result
