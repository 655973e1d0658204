"""Moving a VM to another platform: guard, export, convert, import, verify, then (if asked)
remove the source. The source is never touched until the copy is verified.

Verified means: the new VM's configuration is what the plan said, every disk
stream carried exactly the bytes its platform declared (the kit's byte-count
check, in each driver), and every disk read back from the target holds the
source's bytes (:mod:`anyvirt.migration.verify`). Only then does the move
report success, and only then does ``delete_source`` run. A target that cannot
be read back gives a move verified by configuration only, and refuses
``delete_source`` before anything is copied.

The move's point of no return is the end of its task (``job.commit``), where the
source is deleted when asked: a move cancelled or past its deadline before it
removes its copy and keeps the source; after it, the source goes under the same
hold that kept it unchanged through the copy, and the move reports success,
however late.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import evolve

from anyvirt.errors import AnyvirtError, InvalidSpec, NotSupported, TaskFailed
from anyvirt.kit import extent_digest
from anyvirt.migration import disk_check, range_check
from anyvirt.migration.plan import MigrationPlan, plan_migration
from anyvirt.model import (
    Capability,
    DiskSpec,
    DiskVerification,
    ExportedDisk,
    MigrationResult,
    PowerState,
)
from anyvirt.tasks import DEFAULT_TIMEOUT, Job, ProgressCallback

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.operations import HeldVM
    from anyvirt.vm import VM

SNAPSHOT_PREFIX = "anyvirt-move-"
#: what to do about a VM the export row refuses (running), in the move's own options
RUNNING_HINT = ("stop it first, or pass shutdown=True (graceful stop) or snapshot=True "
                "(crash-consistent copy)")


def export(held: HeldVM, dest: Path, job: Job,
           stack: contextlib.ExitStack) -> dict[str, ExportedDisk]:
    """The held VM's disks as local paths, by disk id, each checked: read where they are
    when the source's driver can (no copy at all: the target's import reads them straight
    from the source's storage); else streamed from the platform as the import reads them,
    for as long as ``stack`` lasts (no copy either, and no hash first: the verification
    reads the data ranges); else exported into ``dest`` and (raw) hashed."""
    in_place = held.disks_in_place(job)
    if in_place is not None:
        return {d.id: disk_check.checked_export(d, job) for d in in_place}
    streamed = stack.enter_context(held.streamed_disks(job))
    if streamed is not None:
        return {d.id: disk_check.checked_export(d, job, hashed=False) for d in streamed}
    return {d.id: disk_check.checked_export(d, job) for d in held.export_disks(dest, job)}


def export_at_snapshot(held: HeldVM, dest: Path, job: Job) -> dict[str, ExportedDisk]:
    """A running VM's disks as they were at one instant (crash-consistent): the gate takes
    a snapshot under the move's hold, exports its disks and removes it again."""
    name = f"{SNAPSHOT_PREFIX}{uuid.uuid4().hex[:8]}"
    disks = held.disks_at_snapshot(name, "point-in-time copy for anyvirt.migrate", dest, job)
    return {d.id: disk_check.checked_export(d, job) for d in disks}


def spec_with_images(plan: MigrationPlan, exported: dict[str, ExportedDisk]) -> Any:
    disks = []
    for disk_id, planned in zip(plan.disk_ids, plan.spec.disks, strict=True):
        if disk_id not in exported:
            raise TaskFailed(f"the export gave no file for disk {disk_id}")
        out = exported[disk_id]
        size_gib = out.size_bytes / (1024**3) if out.size_bytes else None
        # the export's own format: a raw guest disk stays raw whatever header it starts with
        disks.append(DiskSpec(image=out.path, size_gib=size_gib, bus=planned.bus,
                              format=out.format))
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


def read_back(new: VM, plan: MigrationPlan, exported: dict[str, ExportedDisk], dest: Path,
              job: Job) -> tuple[DiskVerification, ...]:
    """Every disk of the new VM read back through its own driver and compared with the
    source's export, in plan order. Where the target reads byte ranges of its disks, only
    the source's data ranges are read back (:mod:`anyvirt.migration.range_check`);
    otherwise whole disks are exported and compared, their files removed as they are done."""
    by_ranges = range_check.read_back(new, [exported[d] for d in plan.disk_ids], job)
    if by_ranges is not None:
        return by_ranges
    copies = _export_copy(new, dest, job.span(0, 60))
    if len(copies) != len(plan.disk_ids):
        raise TaskFailed(f"the copy has {len(copies)} disks to read back, expected "
                         f"{len(plan.disk_ids)}")
    checks = []
    share = 40.0 / max(len(copies), 1)
    for index, (disk_id, copy) in enumerate(zip(plan.disk_ids, copies, strict=True)):
        try:
            low = 60 + share * index
            span = job.span(low, low + share)
            # the source's digest taken as the copy read it, if any: the source, which may
            # be streamed from afar, is not read a second time
            checks.append(range_check.against_taken(exported[disk_id], copy, span)
                          or disk_check.compare(exported[disk_id], copy, span))
        finally:
            Path(copy.path).unlink(missing_ok=True)
    return tuple(checks)


def _export_copy(new: VM, dest: Path, job: Job) -> list[ExportedDisk]:
    """The new VM's disks exported through its own driver, under its host's export row
    (held, not running), as a task inside this one: this job's cancel reaches it."""
    task = new.host.gate.export(
        new, "read back", lambda inner, held: held.export_disks(dest, inner), wait=False,
        timeout=job.remaining(), on_progress=lambda t: job.progress(t.progress, t.message or ""))
    job.on_cancel(task.cancel)
    copies: list[ExportedDisk] = task.wait(job.remaining())
    return copies


def _remove(new: VM) -> None:
    with contextlib.suppress(AnyvirtError):
        new.refresh()
        if new.state is not PowerState.STOPPED:
            new.stop(force=True)
        new.delete(disks=True)


def migrate(
    vm: VM,
    to: Host,
    *,
    name: str | None = None,
    shutdown: bool = False,
    snapshot: bool = False,
    delete_source: bool = False,
    start: bool | None = None,
    networks: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    on_progress: ProgressCallback | None = None,
) -> MigrationResult:
    """Move ``vm`` to ``to``, a host of another platform (or the same one: a cold copy).

    A running VM is refused unless ``shutdown=True`` (stopped gracefully first) or
    ``snapshot=True`` (a crash-consistent copy of its disks at one instant, from a
    snapshot that is removed afterwards; the VM keeps running). ``networks`` maps
    source networks to target ones (see :func:`plan_migration`). The source is
    removed only with ``delete_source=True`` and only after every disk was read back
    from the target and matched; a failed copy is removed again. ``start`` defaults
    to starting the copy if the source was running.
    """
    started = time.monotonic()
    if shutdown and snapshot:
        raise InvalidSpec("shutdown=True and snapshot=True exclude each other: choose one")
    plan = plan_migration(vm, to, name=name, networks=networks)
    readable = to.supports(Capability.DISK_EXPORT) or not plan.disk_ids
    if delete_source and not readable:
        raise NotSupported(to.backend, Capability.DISK_EXPORT,
                           "delete_source=True needs the copy read back from the target to verify "
                           "it, and this target cannot export disks")
    was_running = vm.refresh().state is PowerState.RUNNING
    running_copy = was_running and snapshot  # a crash-consistent copy of a running VM
    if delete_source and running_copy:
        raise InvalidSpec("delete_source=True with snapshot=True would delete a running source "
                          "and what it wrote after the snapshot: use shutdown=True")
    if delete_source:  # refused before the VM is stopped; the export's row checks again
        vm.host.gate.check("export", vm, {"delete_source": True}, states=False)
    consistency = "stopped"
    if was_running and shutdown:
        vm.stop(timeout=min(timeout or 300.0, 300.0))
        consistency = "shut down first"
    elif was_running and snapshot:
        consistency = "crash-consistent snapshot"

    def work(job: Job, held: HeldVM) -> MigrationResult:
        with tempfile.TemporaryDirectory(prefix="anyvirt-move-") as tmp, \
                contextlib.ExitStack() as sources:
            # one bar for the whole move: export, import and read-back each get a share
            job.progress(0, f"exporting the disks of {vm.name}")
            out = job.span(0, 40)
            if running_copy:
                exported = export_at_snapshot(held, Path(tmp) / "source", out)
            else:
                exported = export(held, Path(tmp) / "source", out, sources)
            # the copy's reads of each source hash its data ranges on the way out, so the
            # verification need not read a source streamed from afar a second time (the
            # source is held unchanged until the verification is done)
            taps = sources.enter_context(extent_digest.tapping(
                {d.path: d.size_bytes for d in exported.values()}))
            spec = spec_with_images(plan, exported)
            job.progress(40, f"importing into {to.backend}")
            into = job.span(40, 75)
            new = to.vms.create(spec, timeout=job.remaining(),
                                on_progress=lambda t: into.progress(t.progress, t.message or ""))
            # the copy is done: what it read is the pass (a source's side feeding a tap
            # cannot tell when the import read its last byte)
            for tap in taps.values():
                tap.end()
            try:
                job.progress(75, "verifying the copy")
                verify(new, plan)
                checked: tuple[str, ...] = ("config", "byte-count")
                disks: tuple[DiskVerification, ...] = ()
                if plan.disk_ids and readable:
                    disks = read_back(new, plan, exported, Path(tmp) / "copy", job.span(75, 100))
                    checked += ("read-back",)
                if start or (start is None and was_running):
                    new.start(timeout=job.remaining())
                if delete_source:
                    held.check("delete", disks=True)  # again, under the hold, just before
                job.commit(f"deleting the source {vm.name!r}" if delete_source
                           else f"keeping the copy of {vm.name!r}")
            except BaseException:
                _remove(new)
                raise
            moved = sum(d.size_bytes for d in exported.values())
        warnings = plan.warning_codes
        if delete_source:
            warnings += _delete_source(held, job)
        return MigrationResult(
            vm_id=new.id, vm_name=new.name, source=plan.source_uri, target=plan.target_uri,
            live=False, duration_s=round(time.monotonic() - started, 3), downtime_ms=None,
            bytes_transferred=moved, warnings=warnings, verified=checked,
            disks=disks, consistency=consistency,
        )

    # the source is held through the copy (the gate's export rows: not running, or copied
    # as a snapshot froze it; one change at a time), and through its deletion once the
    # copy is verified
    result = vm.host.gate.export(vm, f"move to {to.backend}", work, running=running_copy,
                                 delete_source=delete_source, wait=True, timeout=timeout,
                                 on_progress=on_progress, state_hint=RUNNING_HINT)
    assert isinstance(result, MigrationResult)
    return result


def _delete_source(held: HeldVM, job: Job) -> tuple[str, ...]:
    """Past the point of no return: the verified copy is the VM now, so a source that cannot
    be deleted is said in the result's warnings, not raised as a failed move."""
    try:
        held.delete(job)
    except AnyvirtError as error:
        return (f"source-not-deleted: {error}",)
    return ()
