"""``anyvirt.recover``: a dead standalone host's VMs brought up on another host.

Fencing before restart, as Nova's evacuate, vSphere HA, Proxmox HA and Pacemaker
do: two running copies of one VM on one disk corrupt it, which is worse than
downtime. So every check runs before anything changes on ``to``:

1. the failed host must not answer (:mod:`anyvirt.recovery.probe`);
2. its VMs are found without it: the definition records in ``to``'s storage
   (:mod:`anyvirt.recovery.records`) and, with a repository, the restore points
   taken of the failed host's VMs;
3. a VM whose disks ``to`` reads comes back on them (nothing lost); its disks must
   not be locked by another process (a QEMU of the failed host that still runs),
   unless the caller says the failed host is fenced (``fenced=True``);
4. any other VM comes back from its newest restore point (what was written after it
   is lost; the result says how old the data is);
5. names ``to`` already uses are refused per VM, never overwritten.

Then each VM is defined (or restored) and started, and a recovery mark is left
beside its disks so that the failed host, when it returns, disarms its stale copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from attrs import frozen

from anyvirt.errors import AnyvirtError, InvalidSpec, InvalidState, NotFound
from anyvirt.recovery import probe
from anyvirt.recovery.records import DefinitionRecord, RecoveryMark, now
from anyvirt.recovery.result import RecoveredFrom, Recovery, RecoveryResult
from anyvirt.recovery.spi import RecoverySupport

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.repository import BackupRepository
    from anyvirt.repository.points import RestorePoint
    from anyvirt.target import Target
    from anyvirt.tasks import Task
    from anyvirt.vm import VM

#: a callable told what the recovery does, one line at a time (the CLI's progress)
Progress = Callable[[str], None]
#: how many starts are admitted at once (each waits on the new host's answers)
START_THREADS = 16
#: seconds each VM's define-and-start gets
VM_TIMEOUT = 600.0


@frozen
class _Plan:
    """One VM of the failed host and how it will come back."""

    vm_id: str
    vm_name: str
    record: DefinitionRecord | None = None  # from shared storage, on its own disks
    point: RestorePoint | None = None  # else from this restore point
    refused: str = ""  # else why not


def recover(failed: str, to: Host, repository: BackupRepository | None = None, fenced: bool = False,
            *, probe_timeout: float = probe.PROBE_TIMEOUT,
            progress: Progress | None = None) -> Recovery:
    """Bring up on ``to`` the VMs of the standalone host ``failed`` (a URI), which is down.

    Returns a :class:`~anyvirt.recovery.result.Recovery`: per VM, recovered from shared
    storage, from a restore point (with the data's age), or not, with the reason.
    Raises ``InvalidState`` while ``failed`` answers, or while a disk is still locked by
    another process and ``fenced`` is False; ``NotFound`` when nothing of ``failed`` is
    known (no definition record ``to`` reads, no restore point)."""
    from anyvirt.connect import build_target

    started = time.monotonic()
    say = progress or (lambda _line: None)
    target = build_target(failed)
    if target.safe_uri == to.uri:
        raise InvalidSpec(f"{to.uri} is the failed host itself: recover onto another host")
    say(f"checking that {target.safe_uri} is down")
    probe.refuse_if_answering(failed, target.safe_uri, probe_timeout)
    support = to.driver if isinstance(to.driver, RecoverySupport) else None
    if support is None and repository is None:
        raise InvalidSpec(f"{to.backend} hosts keep no definition records: recover onto them "
                          "from a backup repository (repository=...)")
    say(f"reading definition records on {to.uri}")
    records = _records_of(support, target)
    points = _newest_points(repository, target) if repository is not None else {}
    plans = _plan(support, records, points, to)
    if not plans:
        raise NotFound(f"nothing of {target.safe_uri} is known on {to.uri}: no definition record in "
                       "its storage" + (" and no restore point in the repository"
                                        if repository is not None else " (pass a repository)"))
    if support is not None:
        _check_locks(support, [p for p in plans if p.record is not None and not p.refused], fenced)
    results = _bring_up(plans, to, support, repository, started, say)
    results.elapsed = time.monotonic() - started
    return results


# ---------------------------------------------------------------- finding the VMs
def _same_host(uri: str, hostname: str, target: Target) -> bool:
    """Whether a record or point written through ``uri`` (on a host called ``hostname``)
    is of the failed host: the same URI, or the same host name in a remote URI."""
    from anyvirt.connect import build_target

    if uri == target.safe_uri:
        return True
    if not target.host:
        return False
    try:
        written_through = build_target(uri).host
    except AnyvirtError:
        written_through = ""
    return target.host in (hostname, written_through)


def _records_of(support: RecoverySupport | None, target: Target) -> dict[str, DefinitionRecord]:
    """The newest record of each VM of the failed host."""
    newest: dict[str, DefinitionRecord] = {}
    for record in support.definition_records() if support is not None else []:
        if _same_host(record.host_uri, record.hostname, target):
            known = newest.get(record.vm_id)
            if known is None or record.written > known.written:
                newest[record.vm_id] = record
    return newest


def _newest_points(repository: BackupRepository, target: Target) -> dict[str, RestorePoint]:
    """The newest restore point of each VM the failed host ran when it was backed up."""
    newest: dict[str, RestorePoint] = {}
    for point in repository.points():  # oldest first
        source = point.manifest.get("source", {}) if isinstance(point.manifest, dict) else {}
        if _same_host(str(source.get("uri", "")), "", target):
            newest[point.vm_id] = point
    return newest


def _plan(support: RecoverySupport | None, records: dict[str, DefinitionRecord],
          points: dict[str, RestorePoint], to: Host) -> list[_Plan]:
    present = {vm.id: vm.name for vm in to.vms.list()}
    names = set(present.values())
    plans = []
    for vm_id in sorted({*records, *points}, key=lambda i: (records.get(i) or points[i]).vm_name):
        record, point = records.get(vm_id), points.get(vm_id)
        name = record.vm_name if record is not None else point.vm_name if point is not None else ""
        unreadable = support.unreadable_disks(record) if support and record else []
        if vm_id in present:
            plans.append(_Plan(vm_id, name, refused=f"{to.uri} already has it (as {present[vm_id]!r}): "
                                                    "recovered before?"))
        elif name in names:
            plans.append(_Plan(vm_id, name, refused=f"{to.uri} already has a VM named {name!r}"))
        elif record is not None and not unreadable:
            plans.append(_Plan(vm_id, name, record=record))
        elif point is not None:
            plans.append(_Plan(vm_id, name, record=record, point=point))
        else:
            plans.append(_Plan(vm_id, name, record=record, refused=(
                f"its disks ({', '.join(unreadable)}) are not on storage {to.uri} reads, and no "
                "restore point of it is at hand")))
        names.add(name)
    return plans


def _check_locks(support: RecoverySupport, plans: list[_Plan], fenced: bool) -> None:
    """Refuse while a QEMU (of the failed host, still running) holds a disk: starting a
    second copy on it would corrupt it. ``fenced`` is the caller's word that the failed
    host is powered off; the image locks still keep a second QEMU off a held disk."""
    if fenced or not plans:
        return
    paths = [path for plan in plans if plan.record is not None for path in plan.record.disks]
    locked = support.locked_disks(paths)
    if locked is None:
        raise InvalidState("the disks' image locks cannot be probed from here (the new host is "
                           "remote): make sure the failed host is powered off, then pass fenced=True")
    if locked:
        held = "; ".join(f"{path}: {why}" for path, why in sorted(locked.items()))
        raise InvalidState(f"{len(locked)} disk(s) are still in use by another process, so the failed "
                           f"host's VMs may still run ({held}). Power the failed host off (fence it); "
                           "pass fenced=True only once it is")


# ---------------------------------------------------------------- bringing them up
@frozen
class _Made:
    """A VM defined or restored on the new host, not started yet."""

    plan: _Plan
    vm: VM


def _bring_up(plans: list[_Plan], to: Host, support: RecoverySupport | None,
              repository: BackupRepository | None, started: float, say: Progress) -> Recovery:
    """Define (or restore) each VM, then start them all at once (QEMU's start is most of
    the time, and the host starts guests side by side), leaving the marks meanwhile."""
    done: dict[str, RecoveryResult] = {}

    def give_up(plan: _Plan, reason: str) -> None:
        say(f"{plan.vm_name}: not recovered ({reason})")
        done[plan.vm_id] = RecoveryResult(plan.vm_name, plan.vm_id, RecoveredFrom.NOT_RECOVERED,
                                          reason=reason, elapsed=time.monotonic() - started)

    made: list[_Made] = []
    for plan in plans:
        if plan.refused:
            give_up(plan, plan.refused)
            continue
        try:
            made.append(_Made(plan, _make(plan, to, support, repository, say)))
        except AnyvirtError as exc:
            give_up(plan, str(exc))
    to_start = [m for m in made
                if not (m.plan.record is not None and m.plan.point is None and m.plan.record.template)]
    say(f"starting {len(to_start)} VM(s) on {to.uri}")
    # each start is admitted (held, re-read, reserved) in a thread of its own: a daemon busy
    # starting the others answers each re-read slowly, and one after the other those waits
    # add up to more than the starts themselves
    with ThreadPoolExecutor(max(1, min(len(to_start), START_THREADS))) as pool:
        admitted = pool.map(_admit_start, to_start)
        # the marks are written while the guests start (a VM that then fails to start loses
        # its mark again); a mark without a running VM only keeps the old copy down: safe
        host_id = _host_id(to)
        notes = {m.plan.vm_id: _leave_mark(m.plan, to, support, host_id) for m in made}
        starting = list(zip(to_start, admitted, strict=True))
    for item, task in starting:
        try:
            if isinstance(task, AnyvirtError):
                raise task
            task.wait(VM_TIMEOUT + 60)
        except AnyvirtError as exc:
            give_up(item.plan, f"{exc}{_unmake(item, support)}")  # nothing half-made
    for item in made:
        if item.plan.vm_id not in done:
            say(f"{item.plan.vm_name}: running on {to.uri}")
            done[item.plan.vm_id] = _report(item, notes[item.plan.vm_id], started)
    return Recovery([done[p.vm_id] for p in plans])


def _admit_start(item: _Made) -> Task[Any] | AnyvirtError:
    """The VM's start, admitted and under way; the refusal, where the gate refused it."""
    try:
        return item.vm.start(wait=False, timeout=VM_TIMEOUT)
    except AnyvirtError as exc:
        return exc


def _make(plan: _Plan, to: Host, support: RecoverySupport | None,
          repository: BackupRepository | None, say: Progress) -> VM:
    from anyvirt.vm import VM

    if plan.point is None and plan.record is not None and support is not None:
        record = plan.record
        say(f"{plan.vm_name}: defining on {to.uri} from shared storage")
        summary = to.gate.extension(f"recover VM {record.vm_name!r}",
                                    lambda job: support.define_recovered(record, job),
                                    capability=None, wait=True, timeout=VM_TIMEOUT)
        return VM(to, summary)
    assert plan.point is not None and repository is not None
    say(f"{plan.vm_name}: restoring point {plan.point.id} on {to.uri}")
    return repository.restore(plan.point, to=to, name=plan.point.vm_name)


def _unmake(item: _Made, support: RecoverySupport | None) -> str:
    """A VM that did not start goes again: a restored copy with its disks (nothing else
    uses them), a VM on shared storage without them (its record put back as it was).
    Returns what to add to the reason when that failed too."""
    try:
        if item.plan.point is None and item.plan.record is not None and support is not None:
            support.undo_recovered(item.plan.record)
        else:
            item.vm.delete(disks=True)
    except AnyvirtError as exc:
        return f" (and it could not be removed again from {item.vm.host.uri}: {exc})"
    return ""


def _leave_mark(plan: _Plan, to: Host, support: RecoverySupport | None, host_id: str) -> str:
    """Leave the recovery mark where the failed host reads it; a warning when there is none."""
    if support is None:
        return ""
    mark = RecoveryMark(vm_id=plan.vm_id, vm_name=plan.vm_name,
                        failed_host_id=plan.record.host_id if plan.record else "",
                        recovered_on=to.uri, recovered_host_id=host_id, at=now())
    try:
        if not support.write_recovery_mark(mark, plan.record):
            return ("no recovery mark could be left where the failed host reads it: disable its "
                    "autostart by hand before it returns")
    except AnyvirtError as exc:
        return f"the recovery mark could not be written ({exc})"
    return ""


def _report(item: _Made, note: str, started: float) -> RecoveryResult:
    plan = item.plan
    if plan.point is None:
        outcome, point, age = RecoveredFrom.SHARED_STORAGE, None, None
    else:
        outcome, point, age = RecoveredFrom.RESTORE_POINT, plan.point, now() - plan.point.created
    return RecoveryResult(plan.vm_name, plan.vm_id, outcome, vm=item.vm, point=point, data_age=age,
                          reason=note, elapsed=time.monotonic() - started)


def _host_id(host: Host) -> str:
    nodes = host.nodes.list()
    return nodes[0].id if len(nodes) == 1 else ""
