"""The operation gate: the table's rows (:mod:`anyvirt.rules`), enforced in one place.

Handles (``Host``, ``VM``, ``Snapshot``, ``Node``) make one call into the
:class:`Gate` with ids and plain values, and a ``wrap`` that turns the plain
result into their handle. Every verb goes through :meth:`Gate.operate`, which
applies its row, in this order, before anything is sent:

1. the deadline (``timeout=``) starts: it bounds the whole operation;
2. the connection is open and has the row's **capability** and the refined ones
   the case's input needs: else ``NotSupported``;
3. the row's input **checks** (the core's string rules, then the backend's
   ``check_vm_name``, ``check_snapshot_name``, ``check_description``,
   ``check_storage_name``, ``check_network_name``, whole numbers, placement
   types): else ``InvalidSpec``;
4. **one change at a time per VM**: the VM and any name being made are held until
   the work really ends: else ``InvalidState`` (busy) or ``AlreadyExists``;
5. the VM is **re-read** under that hold; its power state and template flag are
   checked against the row, and the refinements that depend on them: else
   ``InvalidState`` / ``NotSupported``;
6. the row's **preconditions** (a free name, a node that takes VMs, no linked
   clone left broken, a reachable target, ...): else ``AlreadyExists`` /
   ``NotFound`` / ``InvalidState`` / ``NotSupported``;
7. the row's **reservation** against the overcommit limit: else ``CapacityExceeded``.

Then the driver's primitive runs as a :class:`~anyvirt.tasks.Task` whose
deadline started at step 1: past it the caller gets ``Timeout`` at once, the
platform is asked to stop, and what a create, clone or snapshot still makes
afterwards is removed; holds and reservations go back when the work really
ends. Drivers receive only what passed, and hold only platform primitives. A
new operation is one row and one primitive: ``gate.operate(row, ...)``.
Nova keeps instance-state rules above its drivers the same way
(``check_instance_state``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import wait as wait_all
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from anyvirt import holds, validation
from anyvirt.addresses import GuestAddress, select_addresses
from anyvirt.console import Console
from anyvirt.deployment.identity import Identity, ResolvedIdentity
from anyvirt.errors import (
    AlreadyExists,
    AmbiguousName,
    AnyvirtError,
    Cancelled,
    InvalidSpec,
    InvalidState,
    NotFound,
    OutcomeUnknown,
    Timeout,
)
from anyvirt.kit.polling import Status, failed, poll, running, succeeded
from anyvirt.lookup import find_node
from anyvirt.model import (
    Capability,
    ExportedDisk,
    MigrationResult,
    NodeInfo,
    Overcommit,
    Placement,
    PowerAction,
    PowerState,
    RecoveredVM,
    RecoveryCandidate,
    SnapshotInfo,
    VMSpec,
    VMSummary,
    evolve,
)
from anyvirt.rules import (
    ALLOWED_FROM,
    ANY_STATE,
    DELETABLE,
    RULES,
    Case,
    Demand,
    Rule,
    check_power_state,
    least_loaded,
    node_id,
    operations_markdown,
    states_text,
    takes_vms,
)
from anyvirt.tasks import Job, ProgressCallback, Task

if TYPE_CHECKING:
    from anyvirt.capacity import Reservation
    from anyvirt.driver import Driver
    from anyvirt.kit.extent_digest import RangeDigest

T = TypeVar("T")
W = TypeVar("W")
log = logging.getLogger("anyvirt")
#: the longest pause between two looks at a VM that is coming up
READY_INTERVAL = 2.0
#: how a VM of a failed node came back: ``anyvirt.recovery.RecoveredFrom``'s values (the
#: workflow above the handles owns the enum; the gate hands plain values up)
SHARED_STORAGE, CLUSTER, NOT_RECOVERED = "shared-storage", "cluster", "not-recovered"


class Connection(Protocol):
    """What the gate needs of a connection (``Host`` is one)."""

    @property
    def driver(self) -> Driver: ...

    @property
    def uri(self) -> str: ...

    @property
    def backend(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    @property
    def overcommit(self) -> Overcommit: ...

    def require(self, capability: Capability, detail: str = "") -> None: ...

    def why_not(self, capability: Capability) -> str: ...

    def reserve_capacity(self, cpus: int, memory_mib: int) -> Reservation: ...

    def check_capacity(self, cpus: int, memory_mib: int) -> None: ...


class VMRef(Protocol):
    """Anything naming one VM by id (a ``VM`` handle is one): the gate reads only these."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


def _keep(value: T) -> T:
    return value


def _was_running(vm: VMSummary) -> bool:
    """A VM that ran (or was paused) when its node failed runs again; a stopped one, or a
    template, comes back stopped."""
    return vm.state in (PowerState.RUNNING, PowerState.PAUSED) and not vm.template


class _Reads:
    """The platform reads a row's callables may make (``anyvirt.rules.Reads``)."""

    def __init__(self, here: Connection, target: Connection | None = None) -> None:
        self.here, self.target = here, target
        self.extra_holds: list[holds.Hold] = []

    def _at(self, on_target: bool) -> Connection:
        return self.target if on_target and self.target is not None else self.here

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.here.capabilities

    def uri(self, *, on_target: bool = False) -> str:
        return self._at(on_target).uri

    def backend(self, *, on_target: bool = False) -> str:
        return self._at(on_target).backend

    def reaches_target(self) -> bool:
        return self.here.driver.can_reach(self._at(True).driver)

    def schedules(self, *, on_target: bool = False) -> bool:
        return self._at(on_target).driver.schedules_vms

    def bounds_vms(self, *, on_target: bool = False) -> bool:
        return self._at(on_target).driver.bounds_vm_by_node

    def running_takes(self, vm_id: str) -> frozenset[str]:
        return self.here.driver.running_takes(vm_id)

    def loads(self, *, on_target: bool = False) -> tuple[list[NodeInfo], list[tuple[str, int]]]:
        driver = self._at(on_target).driver
        return driver.list_nodes(), [(vm.node or "", vm.memory_mib) for vm in driver.list_vms()]

    def name_taken(self, name: str, *, on_target: bool = False) -> bool:
        validation.LOOKUP.check(name)
        try:
            self._at(on_target).driver.find_vm(name)
        except AmbiguousName:  # two VMs have it already
            return True
        except NotFound:
            return False
        return True

    def node(self, ref: str, *, on_target: bool = False) -> NodeInfo:
        where = self._at(on_target)
        return find_node(where.driver.list_nodes(), ref, where.uri)

    def node_vms(self, node_id: str) -> list[str]:
        info = self.node(node_id)
        return [vm.name for vm in self.here.driver.list_vms() if vm.node in (info.id, info.name)]

    def linked_clones(self, vm_id: str) -> list[str]:
        return self.here.driver.linked_clones(vm_id)

    def is_linked_clone(self, vm_id: str) -> bool:
        return self.here.driver.is_linked_clone(vm_id)

    def snapshots(self, vm_id: str) -> list[SnapshotInfo]:
        return self.here.driver.list_snapshots(vm_id)

    def placement(self, placement: Placement, *, on_target: bool = False) -> Placement:
        where = self._at(on_target)
        offered = where.driver.placement_options
        unknown = sorted(placement.given() - offered - {"node"})
        if unknown:
            raise InvalidSpec(
                f"{where.backend} takes no {', '.join(unknown)} placement"
                f" (it takes: {', '.join(sorted(offered | {'node'}))})"
            )
        if placement.storage is not None:
            _platform_rule(where, "storage", placement.storage, "placement storage")
        return evolve(placement, node=node_id(self, placement.node, on_target=on_target))

    def check_image(self, image: str, format: str | None = None) -> None:
        _platform_rule(self.here, "disk image", image, "disk image", image_format=format)

    def platform_rule(self, field: str, value: str, what: str) -> None:
        _platform_rule(self.here, field, value, what)

    def hold_name_on_target(self, name: str, what: str) -> None:
        where = self._at(True)
        self.extra_holds.append(_take(where, what, names=[name]))

    def hold_vms(self, vm_ids: Sequence[str], what: str) -> None:
        self.extra_holds.append(_take(self.here, what, ids=vm_ids))

    def why_not(self, capability: Capability) -> str:
        return self.here.why_not(capability)

    def recovery_candidates(self, node_id: str) -> list[RecoveryCandidate]:
        return self.here.driver.recovery_candidates(node_id)


def _platform_rule(where: Connection, field: str, value: str, what: str,
                   image_format: str | None = None) -> None:
    """A backend's rule for a field; its ``InvalidSpec`` names the field and, where the
    backend did not, the rule as "<backend> rule". ``image_format``: a disk image's
    known format (``DiskSpec.format``), so the check reads it as that, never probing."""
    driver = where.driver
    hooks: dict[str, Callable[[str, str], None]] = {
        "VM name": driver.check_vm_name,
        "snapshot name": driver.check_snapshot_name,
        "description": driver.check_description,
        "storage": driver.check_storage_name,
        "network": driver.check_network_name,
        "disk image": lambda image, _what: driver.check_image(image, image_format),
    }
    try:
        hooks[field](value, what)
    except InvalidSpec as refused:
        if not refused.field:
            refused.field, refused.rule = field, f"{where.backend} rule"
        raise


def _take(where: Connection, what: str, ids: Sequence[str] = (), names: Sequence[str] = (),
          who: str = "") -> holds.Hold:
    try:
        return holds.take(where.uri, ids, names, what)
    except holds.Busy as busy:
        if busy.kind == "name":
            raise AlreadyExists(
                f"a VM named {busy.value!r} is being made on {where.uri} ({busy.what})"
            ) from None
        raise InvalidState(
            f"cannot {what}: VM {who or busy.value!r} is busy ({busy.what}); try again when that "
            "is done"
        ) from None


class _Release:
    """What one operation gives back when its work really ends: holds, then reservations."""

    def __init__(self) -> None:
        self.parts: list[Any] = []

    def release(self) -> None:
        parts, self.parts = self.parts, []
        for part in reversed(parts):
            part.release()


class HeldVM:
    """A VM an export holds, and what its work may do under that one hold (no second hold
    is taken; each step's row is applied as if the step were an operation of its own).
    The gate hands it to the export's work only, and it is good while that work runs."""

    def __init__(self, gate: Gate, vm_id: str, vm_name: str) -> None:
        self.gate, self.id, self.name = gate, vm_id, vm_name

    def check(self, op: str, **args: Any) -> Case:
        """``op``'s row, applied to the held VM now."""
        return self.gate.check(op, self, args)

    def disks(self, dest: Path, job: Job) -> tuple[list[ExportedDisk], bool]:
        """The stopped VM's disks as files, and whether they are read in place: where they
        are when the driver can (``disks_in_place``: no copy), else exported into ``dest``."""
        in_place = self.disks_in_place(job)
        if in_place is not None:
            return in_place, True
        return self.export_disks(dest, job), False

    def disks_in_place(self, job: Job) -> list[ExportedDisk] | None:
        """The stopped VM's disks as the files they are, where this process reads them
        (None otherwise)."""
        return self.gate.host.driver.disks_in_place(self.id, job)

    def streamed_disks(self, job: Job) -> contextlib.AbstractContextManager[
            list[ExportedDisk] | None]:
        """The stopped VM's disks read from the platform as they are consumed, for as long as
        the context lasts (None where the driver cannot stream them)."""
        return self.gate.host.driver.stream_disks(self.id, job)

    def export_disks(self, dest: Path, job: Job) -> list[ExportedDisk]:
        """The stopped VM's disks exported into ``dest`` through its driver (always a copy:
        a read-back compares what the platform gives out)."""
        dest.mkdir(parents=True, exist_ok=True)
        return self.gate.host.driver.export_disks(self.id, dest, job)

    def digest_disk_ranges(self, disk_index: int, ranges: Sequence[tuple[int, int]],
                           job: Job) -> RangeDigest | None:
        """The sha256 of byte ranges of the held VM's disk, read from its platform's storage
        (None where the driver cannot read ranges): a read-back of the data only."""
        return self.gate.host.driver.digest_disk_ranges(self.id, disk_index, ranges, job)

    def disks_at_snapshot(self, name: str, description: str, dest: Path,
                          job: Job) -> list[ExportedDisk]:
        """The running VM's disks as they were at one instant: a snapshot (the snapshot
        row's rules) is taken, its disks exported, and the snapshot removed again whatever
        happens."""
        case = self.check("snapshot_create", name=name, description=description, memory=False)
        self.gate.require(Capability.SNAPSHOT_DISK_EXPORT)
        driver = self.gate.host.driver
        snap = driver.create_snapshot(self.id, case.args["name"], case.args["description"],
                                      False, job)
        try:
            dest.mkdir(parents=True, exist_ok=True)
            return driver.export_snapshot_disks(self.id, snap.id, dest, job)
        finally:
            driver.delete_snapshot(self.id, snap.id, False, Job(f"removing {name}", 300))

    def delete(self, job: Job) -> None:
        """Delete the VM and its disks under this hold, with the delete row's rules."""
        self.check("delete", disks=True, what=f"delete the source {self.name!r}")
        self.gate.host.driver.delete_vm(self.id, True, job)


class Gate:
    """The one way into a driver. ``host.gate``; handles call it, users need not."""

    def __init__(self, host: Connection) -> None:
        self.host = host

    def require(self, capability: Capability) -> None:
        self.host.require(capability)  # NotSupported, with the driver's why_not

    # ------------------------------------------------------------ the one mechanism
    def operate(
        self,
        rule: Rule,
        label: str,
        primitive: Callable[[Job, Case], T],
        wrap: Callable[[T], W],
        *,
        vm_id: str | None = None,
        vm_name: str = "",
        args: dict[str, Any] | None = None,
        target: Connection | None = None,
        undo: Callable[[T], None] | None = None,
        wait: bool,
        timeout: float | None,
        on_progress: ProgressCallback | None = None,
    ) -> W | Task[W]:
        """Run ``primitive`` under ``rule``: deadline, capability, input checks, hold,
        re-read, state and template rule, preconditions, reservation, then a Task
        (``wait=False`` returns it) whose result ``wrap`` turns into what the caller
        gets. ``undo`` removes a result that arrived after the deadline."""
        entered = time.monotonic()
        other = target is not None and target is not self.host and target.uri != self.host.uri
        reads = _Reads(self.host, target)
        case = Case(rule.call, reads, {"what": label, **(args or {})}, vm_id, vm_name,
                    other_host=other)
        self._admit(rule, case)
        release = _Release()
        ids = [vm_id] if vm_id is not None and rule.holds else []
        release.parts.append(_take(self.host, label, ids, case.new_names, vm_name))
        try:
            self._under_hold(rule, case)
            release.parts.extend(reads.extra_holds)
            reads.extra_holds = []
            reservation = self._reserve(rule, case, target)
            if reservation is not None:
                release.parts.append(reservation)
        except BaseException:
            for hold in reads.extra_holds:
                hold.release()
            release.release()
            raise
        made: list[T] = []

        def work(job: Job) -> W:
            try:
                made.append(primitive(job, case))
            except OutcomeUnknown as unknown:  # the driver may not know which VM it was
                unknown.concerning(vm_id=vm_id or "", vm_name=vm_name)
                raise
            return wrap(made[0])

        late = (lambda _wrapped: undo(made[0])) if undo is not None else None
        task = Task(label, work, timeout=timeout, on_progress=on_progress,
                    backend=self.host.backend,
                    cancellable=Capability.TASK_CANCEL in self.host.capabilities,
                    finish=release.release, undo=late, started=entered)
        return task.run_here() if wait else task.start()

    def _under_hold(self, rule: Rule, case: Case, *, states: bool = True) -> None:
        """What is checked once the VM is held: the re-read, its state and template rules
        (``states=False``: not the power state), and the row's preconditions."""
        if case.vm_id is not None and rule.reads_vm:
            self._reread(rule, case, states=states)
            for refinement in rule.refined_by:
                if refinement.after_reread and refinement.when(case):
                    self.require(refinement.capability)
        for precondition in rule.preconditions:
            precondition(case)

    def check(self, op: str, vm: VMRef, args: dict[str, Any] | None = None, *,
              states: bool = True) -> Case:
        """What ``op``'s row refuses for ``vm`` now, holding nothing and sending nothing: a
        workflow asks it before it starts (``states=False``: but for the power state, when
        it stops the VM first), and a workflow holding the VM asks it before a step of its
        own (:class:`HeldVM`). The operation checks again when it runs."""
        rule = RULES[op]
        reads = _Reads(self.host)
        case = Case(rule.call, reads, {"what": f"{op.replace('_', ' ')} {vm.name!r}",
                                       **(args or {})}, vm.id, vm.name)
        try:
            self._admit(rule, case)
            self._under_hold(rule, case, states=states)
        finally:
            for hold in reads.extra_holds:
                hold.release()
        return case

    def _admit(self, rule: Rule, case: Case) -> None:
        """What needs no hold: the capabilities the input asks for, and the input checks."""
        if rule.capability is not None and (rule.capability_when is None
                                            or rule.capability_when(case)):
            self.require(rule.capability)
        for refinement in rule.refined_by:
            if not refinement.after_reread and refinement.when(case):
                self.require(refinement.capability)
        for check in rule.checks:
            check(case)

    def _reread(self, rule: Rule, case: Case, *, states: bool = True) -> None:
        """Re-read the VM under the hold and apply the row's state and template rules."""
        assert case.vm_id is not None
        case.summary = summary = self.host.driver.vm_summary(case.vm_id)
        what = case.args["what"]
        if rule.settle is not None:
            rule.settle(case)
        if rule.templates == "refused" and summary.template:
            raise InvalidState(f"cannot {what}: {case.vm_name!r} is a template; {rule.template_hint}")
        if rule.templates == "only" and not summary.template:
            raise InvalidState(f"cannot {what}: {case.vm_name!r} is not a template")
        if not states:
            return
        if rule.state_check is not None:
            rule.state_check(case)
        elif summary.state not in rule.states:
            hint = (case.args.get("state_hint") or rule.state_hint
                    or f"that needs it {states_text(rule.states)}")
            raise InvalidState(f"cannot {what}: {case.vm_name!r} is {summary.state}; {hint}")

    def _reserve(self, rule: Rule, case: Case, target: Connection | None) -> Reservation | None:
        if rule.reserve is None:
            return None
        demand: Demand = rule.reserve(case)
        where = target if demand.on_target and target is not None else self.host
        cpus, memory_mib = demand.under(where.overcommit.counts)
        if cpus <= 0 and memory_mib <= 0:
            return None
        return where.reserve_capacity(max(cpus, 0), max(memory_mib, 0))

    def _remove(self, vm_id: str) -> None:
        """Undo a create or clone that finished after its caller was told Timeout."""
        driver = self.host.driver
        job = Job("remove a VM made after its deadline", 300)
        summary = driver.vm_summary(vm_id)
        if summary.state in (PowerState.RUNNING, PowerState.PAUSED):
            driver.power(vm_id, PowerAction.POWER_OFF, job)
        driver.delete_vm(vm_id, True, job)

    # ------------------------------------------------------------ create
    def create(self, spec: VMSpec, wrap: Callable[[VMSummary], W], *, wait: bool,
               timeout: float | None, on_progress: ProgressCallback | None) -> W | Task[W]:
        driver = self.host.driver
        name = spec.name if isinstance(spec, VMSpec) else "?"

        def primitive(job: Job, case: Case) -> VMSummary:
            made = driver.create_vm(case.args["spec"], job)
            identities: list[ResolvedIdentity] | None = case.args["identities"]
            if identities:
                self._made_with_identity([made], identities, job)
            return made

        return self.operate(
            RULES["create"], f"create {name}", primitive, wrap,
            vm_name=name, args={"spec": spec}, undo=lambda made: self._remove(made.id), wait=wait,
            timeout=timeout, on_progress=on_progress)

    # ------------------------------------------------------------ lifecycle
    def power(self, vm_id: str, vm_name: str, action: PowerAction,
              wrap: Callable[[VMSummary | None], W], *, wait: bool, timeout: float | None,
              on_progress: ProgressCallback | None) -> W | Task[W]:
        """A lifecycle verb; ``wrap`` gets the VM re-read, or None for a transient VM that
        is gone once it is off (libvirt's ``virsh create``)."""
        driver = self.host.driver

        def primitive(job: Job, case: Case) -> VMSummary | None:
            chosen: PowerAction = case.args["action"]
            driver.power(vm_id, chosen, job)
            try:
                return driver.vm_summary(vm_id)
            except NotFound:
                if chosen not in (PowerAction.STOP, PowerAction.POWER_OFF):
                    raise
                return None

        verb = action.value.replace("_", " ")
        return self.operate(RULES[action.value], f"{verb} {vm_name}", primitive, wrap,
                            vm_id=vm_id, vm_name=vm_name,
                            args={"action": action, "what": f"{verb} {vm_name!r}"},
                            wait=wait, timeout=timeout, on_progress=on_progress)

    def reconfigure(self, vm_id: str, vm_name: str, cpus: int | None, memory_mib: int | None,
                    wrap: Callable[[bool], W], *, wait: bool, timeout: float | None) -> W | Task[W]:
        driver = self.host.driver
        return self.operate(
            RULES["reconfigure"], f"reconfigure {vm_name}",
            lambda job, case: driver.reconfigure_vm(vm_id, cpus, memory_mib, job), wrap,
            vm_id=vm_id, vm_name=vm_name, args={"cpus": cpus, "memory_mib": memory_mib},
            wait=wait, timeout=timeout)

    def delete(self, vm_id: str, vm_name: str, disks: bool, *, wait: bool,
               timeout: float | None) -> Task[None] | None:
        driver = self.host.driver
        return self.operate(
            RULES["delete"], f"delete {vm_name}",
            lambda job, case: driver.delete_vm(vm_id, bool(disks), job), _keep,
            vm_id=vm_id, vm_name=vm_name,
            args={"disks": bool(disks), "what": f"delete VM {vm_name!r}"},
            wait=wait, timeout=timeout)

    # ------------------------------------------------------------ templates
    def mark_template(self, vm_id: str, vm_name: str, wrap: Callable[[VMSummary], W], *,
                      wait: bool, timeout: float | None) -> W | Task[W]:
        driver = self.host.driver
        return self.operate(
            RULES["mark_template"], f"mark {vm_name} as a template",
            lambda job, case: driver.mark_template(vm_id, job), wrap,
            vm_id=vm_id, vm_name=vm_name, args={"what": f"mark {vm_name!r} as a template"},
            wait=wait, timeout=timeout)

    def convert_to_vm(self, vm_id: str, vm_name: str, node: str | None,
                      wrap: Callable[[VMSummary], W], *, wait: bool,
                      timeout: float | None) -> W | Task[W]:
        driver = self.host.driver
        return self.operate(
            RULES["convert_to_vm"], f"convert {vm_name} to a VM",
            lambda job, case: driver.convert_to_vm(vm_id, case.args["node"], job), wrap,
            vm_id=vm_id, vm_name=vm_name,
            args={"node": node, "what": f"convert {vm_name!r} to a VM"},
            wait=wait, timeout=timeout)

    # ------------------------------------------------------------ clones
    def clone(self, vm_id: str, vm_name: str, name: str, linked: bool, count: int | None,
              placement: Placement, wrap: Callable[[list[VMSummary]], W], *, wait: bool,
              timeout: float | None, on_progress: ProgressCallback | None,
              concurrency: int | None = None, identity: Identity | None = None) -> W | Task[W]:
        """``wrap`` gets every clone made (one without ``count``). ``concurrency``: how many
        copies are made at once (one by default, through the driver's ``clone_vms``, which
        may share work between them); ``identity``: each clone's own, applied before
        anything starts it."""
        driver = self.host.driver

        def undo(made: list[VMSummary]) -> None:
            for clone in made:
                self._remove(clone.id)

        def primitive(job: Job, case: Case) -> list[VMSummary]:
            names: list[str] = case.new_names
            identities: list[ResolvedIdentity] | None = case.args["identities"]
            workers = min(case.args["concurrency"] or 1, len(names))
            if workers == 1 and identities:
                return driver.clone_with_identity(vm_id, names, linked, case.args["placement"],
                                                  identities, job)
            if workers == 1:
                return driver.clone_vms(vm_id, names, linked, case.args["placement"], job)
            return self._clone_concurrently(vm_id, names, identities, linked,
                                            case.args["placement"], workers, job)

        return self.operate(
            RULES["clone"], f"clone {vm_name}", primitive,
            wrap, vm_id=vm_id, vm_name=vm_name,
            args={"name": name, "linked": bool(linked), "count": count, "placement": placement,
                  "concurrency": concurrency, "identity": identity},
            undo=undo, wait=wait, timeout=timeout, on_progress=on_progress)

    def _made_with_identity(self, made: list[VMSummary], identities: list[ResolvedIdentity],
                            job: Job) -> None:
        """Give each VM just made its identity, before anything starts it; if one fails,
        every VM in ``made`` is removed (all or none)."""
        try:
            for index, (summary, identity) in enumerate(zip(made, identities, strict=True)):
                job.progress(100.0 * index / len(made), f"identity of {summary.name}")
                self.host.driver.apply_identity(summary.id, identity, job)
        except BaseException:
            self._remove_all(made)
            raise

    def _clone_concurrently(self, vm_id: str, names: list[str],
                            identities: list[ResolvedIdentity] | None, linked: bool,
                            placement: Placement, workers: int, job: Job) -> list[VMSummary]:
        """``len(names)`` clones, ``workers`` at a time, each with its identity; all or
        none: the first failure stops what has not started, and every clone made is removed."""
        driver = self.host.driver
        made: dict[str, VMSummary] = {}
        lock = threading.Lock()

        def one(index: int) -> None:
            if job.cancelled:
                return
            if identities:
                summary = driver.clone_with_identity(vm_id, [names[index]], linked, placement,
                                                     [identities[index]], job)[0]
            else:
                summary = driver.clone_vm(vm_id, names[index], linked, placement, job)
            with lock:
                made[names[index]] = summary
                done = sum(1 for n in names if n in made)
            job.progress(100.0 * done / len(names), f"cloned {names[index]}")

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anyvirt-clone") as pool:
            futures = [pool.submit(one, i) for i in range(len(names))]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                wait_all(futures)
                self._remove_all([made[n] for n in names if n in made])
                raise
        return [made[n] for n in names]

    def _remove_all(self, made: Sequence[VMSummary]) -> None:
        for summary in reversed(made):
            try:
                self._remove(summary.id)
            except Exception:  # the first error is the one to report
                log.exception("removing %s after a failed create or clone", summary.name)

    # ------------------------------------------------------------ serial console
    def console(self, vm_id: str, vm_name: str, timeout: float) -> Console:
        """Attach to the running VM's serial console."""
        attached = self.operate(RULES["console"], f"console of {vm_name}",
                                lambda job, case: self.host.driver.open_console(vm_id, timeout),
                                lambda channel: Console(channel, vm_name),
                                vm_id=vm_id, vm_name=vm_name, wait=True, timeout=timeout)
        assert not isinstance(attached, Task)
        return attached

    # ------------------------------------------------------------ guest addresses
    def addresses(self, vm_id: str, vm_name: str) -> list[GuestAddress]:
        """The VM's reachable addresses on its own NICs, as the guest reports them now."""
        found = self.operate(RULES["addresses"], f"addresses of {vm_name}",
                             lambda job, case: self._addresses_now(vm_id), _keep,
                             vm_id=vm_id, vm_name=vm_name, wait=True, timeout=None)
        assert not isinstance(found, Task)
        return found

    def _addresses_now(self, vm_id: str) -> list[GuestAddress]:
        driver = self.host.driver
        macs = [nic.mac for nic in driver.vm_info(vm_id).nics if nic.mac]
        return select_addresses(driver.guest_addresses(vm_id), macs)

    def wait_ready(self, vm_id: str, vm_name: str, timeout: float, *, wait: bool = True,
                   interval: float = READY_INTERVAL) -> Any:
        """Wait until the VM runs, has a reachable address on one of its NICs, and its guest
        does not say it is down; the addresses. ``Timeout`` names the stage reached."""
        driver = self.host.driver
        label = f"wait for {vm_name} to be ready"

        def primitive(outer: Job, case: Case) -> list[GuestAddress]:
            job = Job(label, timeout)
            stage = ["not running"]

            def check() -> Status[list[GuestAddress]]:
                if outer.cancelled:
                    return failed(Cancelled(f"{label} was cancelled"))
                if driver.vm_summary(vm_id).state is not PowerState.RUNNING:
                    stage[0] = "not running"
                    return running(message=stage[0])
                found = self._addresses_now(vm_id)
                if not found:
                    stage[0] = "running, no address yet"
                    return running(message=stage[0])
                if driver.guest_reports_up(vm_id) is False:
                    stage[0] = "address, guest not up"
                    return running(message=stage[0])
                return succeeded(found)

            try:
                return poll(check, job, label, first_interval=min(0.05, interval),
                            max_interval=interval)
            except Timeout:
                raise Timeout(f"{vm_name!r} was not ready within {timeout:g} s: "
                              f"{stage[0]}") from None

        return self.operate(RULES["wait_ready"], label, primitive, _keep, vm_id=vm_id,
                            vm_name=vm_name, args={"timeout": timeout}, wait=wait, timeout=None)

    # ------------------------------------------------------------ snapshots
    def snapshot_create(self, vm_id: str, vm_name: str, name: str, description: str,
                        memory: bool, wrap: Callable[[SnapshotInfo], W], *, wait: bool,
                        timeout: float | None) -> W | Task[W]:
        driver = self.host.driver

        def primitive(job: Job, case: Case) -> SnapshotInfo:
            return driver.create_snapshot(vm_id, case.args["name"], case.args["description"],
                                          case.args["memory"], job)

        def undo(snap: SnapshotInfo) -> None:
            driver.delete_snapshot(vm_id, snap.id, False, Job("remove a late snapshot", 300))

        return self.operate(
            RULES["snapshot_create"], f"snapshot {vm_name} as {name}", primitive, wrap,
            vm_id=vm_id, vm_name=vm_name,
            args={"name": name, "description": description, "memory": memory,
                  "what": f"snapshot {vm_name!r}"},
            undo=undo, wait=wait, timeout=timeout)

    def snapshot_revert(self, vm_id: str, vm_name: str, snapshot_id: str, label: str,
                        wrap: Callable[[None], W], *, wait: bool,
                        timeout: float | None) -> W | Task[W]:
        driver = self.host.driver
        return self.operate(
            RULES["snapshot_revert"], f"revert {vm_name} to {label}",
            lambda job, case: driver.revert_snapshot(vm_id, snapshot_id, job), wrap,
            vm_id=vm_id, vm_name=vm_name,
            args={"snapshot_id": snapshot_id, "what": f"revert {vm_name!r}"},
            wait=wait, timeout=timeout)

    def snapshot_delete(self, vm_id: str, vm_name: str, snapshot_id: str, label: str,
                        children: bool, *, wait: bool, timeout: float | None) -> Task[None] | None:
        driver = self.host.driver
        return self.operate(
            RULES["snapshot_delete"], f"delete snapshot {label} of {vm_name}",
            lambda job, case: driver.delete_snapshot(vm_id, snapshot_id, bool(children), job),
            _keep, vm_id=vm_id, vm_name=vm_name,
            args={"snapshot_id": snapshot_id, "what": f"delete a snapshot of {vm_name!r}"},
            wait=wait, timeout=timeout)

    # ------------------------------------------------------------ migration
    def migrate(self, vm_id: str, vm_name: str, target: Connection, node: str | None,
                live: bool | None, placement: Placement,
                wrap: Callable[[MigrationResult], W], *, wait: bool, timeout: float | None,
                on_progress: ProgressCallback | None) -> W | Task[W]:
        """Move a VM to ``node`` of ``target`` (this connection, or another of its backend)."""
        if isinstance(placement, Placement):
            placement = evolve(placement, node=node or placement.node)
        here = self.host.driver
        # one endpoint is one host, however many Host objects reach it: the rules see a move
        # within it (``operate``'s other_host), and so does the driver (no target driver)
        same_host = target is self.host or target.uri == self.host.uri
        there: Driver | None = None if same_host else target.driver

        def primitive(job: Job, case: Case) -> MigrationResult:
            started = time.monotonic()
            result = here.migrate_vm(vm_id, there, case.args["placement"], case.args["live"], job)
            if not result.duration_s:
                result = evolve(result, duration_s=round(time.monotonic() - started, 3))
            return result

        return self.operate(
            RULES["migrate"], f"migrate {vm_name}", primitive, wrap, vm_id=vm_id,
            vm_name=vm_name, target=target,
            args={"live": live, "placement": placement, "same_host": same_host,
                  "what": f"migrate {vm_name!r}"},
            wait=wait, timeout=timeout, on_progress=on_progress)

    # ------------------------------------------------------------ disks out, and back in
    def export(self, vm: VMRef, what: str, work: Callable[[Job, HeldVM], T], *,
               running: bool = False, delete_source: bool = False, state_hint: str = "",
               row: str | None = None, wait: bool, timeout: float | None,
               on_progress: ProgressCallback | None = None) -> Any:
        """Run ``work`` (a backup writer, a cross-platform move) while the VM is held and
        its disks cannot change: the source side of every copy goes through here. ``work``
        gets the :class:`HeldVM`: the disks, and what a move may do under this hold.
        ``running``: the VM runs on and its disks are copied as a snapshot froze them;
        ``delete_source``: the VM is deleted once the copy is verified (the delete row's
        capability and preconditions are checked before anything is copied);
        ``state_hint``: what to do about a VM in a state the row refuses, in the caller's
        words (its own options); ``row``: another row of the table for this copy (a running
        VM's backup through the platform's backup job: ``backup_running``)."""
        held = HeldVM(self, vm.id, vm.name)
        rule = RULES[row or ("export_running" if running else "export")]
        return self.operate(rule, f"{what} {vm.name}",
                            lambda job, case: work(job, held), _keep, vm_id=vm.id,
                            vm_name=vm.name,
                            args={"what": f"{what} {vm.name!r}", "delete_source": delete_source,
                                  "state_hint": state_hint},
                            wait=wait, timeout=timeout, on_progress=on_progress)

    def check_restore(self, name: str, cpus: int, memory_mib: int, with_images: bool) -> None:
        """What a restore checks before it unpacks anything (its create checks again)."""
        rule = RULES["restore"]
        case = Case(rule.call, _Reads(self.host),
                    {"with_images": with_images, "cpus": cpus, "memory_mib": memory_mib},
                    new_names=[name])
        self._admit(rule, case)
        for precondition in rule.preconditions:
            precondition(case)
        if rule.reserve is not None:
            demand = rule.reserve(case)
            self.host.check_capacity(*demand.under(self.host.overcommit.counts))

    # ------------------------------------------------------------ nodes
    def set_maintenance(self, node_id: str, node_name: str, on: bool,
                        wrap: Callable[[None], Any] = _keep, *, wait: bool = True,
                        timeout: float | None) -> Any:
        driver = self.host.driver
        return self.operate(
            RULES["set_maintenance"], f"{'enter' if on else 'leave'} maintenance on {node_name}",
            lambda job, case: driver.set_maintenance(node_id, bool(on), job), wrap,
            args={"on": bool(on), "node_id": node_id, "node_name": node_name},
            wait=wait, timeout=timeout)

    def evacuate(self, node_name: str, maintenance: bool, work: Callable[[Job], T], *,
                 wait: bool, timeout: float | None,
                 on_progress: ProgressCallback | None = None) -> Any:
        """Run ``work`` (every VM's own gated move off the node, then maintenance) as one
        Task, once the connection can migrate (and enter maintenance, if asked)."""
        return self.operate(RULES["evacuate"], f"evacuate {node_name}",
                            lambda job, case: work(job), _keep,
                            args={"maintenance": bool(maintenance), "node_name": node_name},
                            wait=wait, timeout=timeout, on_progress=on_progress)

    def recover(self, node: str, to: str | None, fenced: bool,
                wrap: Callable[[list[RecoveredVM]], W], *, wait: bool, timeout: float | None,
                on_progress: ProgressCallback | None = None) -> W | Task[W]:
        """Bring the VMs of ``node``, which no longer answers, back on live nodes: each
        where its disks are seen, the least loaded first; what the platform's HA recovers
        itself is reported as it says. One VM that fails is reported and the others go on."""
        return self.operate(
            RULES["recover"], f"recover node {node}",
            lambda job, case: self._recover_all(case, job), wrap,
            args={"node": node, "to": to, "fenced": fenced}, wait=wait, timeout=timeout,
            on_progress=on_progress)

    def _recover_all(self, case: Case, job: Job) -> list[RecoveredVM]:
        started = time.monotonic()
        candidates: list[RecoveryCandidate] = case.args["candidates"]
        targets: list[NodeInfo] = case.args["targets"]
        ids = {n.id for n in targets}
        listed = {vm.id: vm for vm in self.host.driver.list_vms()}
        given = [(vm.node or "", vm.memory_mib) for vm in listed.values() if vm.node in ids]
        done: list[RecoveredVM] = []
        for index, candidate in enumerate(candidates):
            job.check()
            job.progress(100.0 * index / len(candidates), f"recovering {candidate.vm.name}")
            if candidate.by_cluster is not None:  # the platform's HA: reported as it says
                outcome, summary, reason = CLUSTER, listed.get(candidate.vm.id), candidate.by_cluster
            else:
                outcome, summary, reason = self._recover_one(candidate, targets, given, case, job)
            done.append(RecoveredVM(candidate.vm.name, candidate.vm.id, outcome, summary,
                                    reason, round(time.monotonic() - started, 3)))
        job.progress(100.0, f"recovered node {case.args['node_name']}")
        return done

    def _recover_one(self, candidate: RecoveryCandidate, targets: list[NodeInfo],
                     given: list[tuple[str, int]], case: Case,
                     job: Job) -> tuple[str, VMSummary | None, str]:
        driver, vm = self.host.driver, candidate.vm
        if candidate.blocked:
            return NOT_RECOVERED, None, candidate.blocked
        where = [n for n in targets if candidate.nodes is None or n.id in candidate.nodes]
        if not where:
            names = ", ".join(sorted(n.name for n in targets))
            return (NOT_RECOVERED, None,
                    f"none of the live nodes ({names}) sees its disks")
        node = least_loaded(where, given, where=case.reads.uri())
        try:
            summary = driver.recover_vm(vm.id, node.id, _was_running(vm), job)
        except (Timeout, Cancelled):
            raise
        except AnyvirtError as failed:  # the others go on; this one says why it did not
            log.warning("recovering %s on %s failed: %s", vm.name, node.name, failed)
            return NOT_RECOVERED, None, f"{type(failed).__name__}: {failed}"
        given.append((node.id, vm.memory_mib))
        return SHARED_STORAGE, summary, ""

    # ------------------------------------------------------------ extensions
    def extension(self, what: str, work: Callable[[Job], T], *, capability: Capability | None,
                  vm: VMRef | None = None, states: frozenset[PowerState] = ANY_STATE,
                  wait: bool, timeout: float | None,
                  on_progress: ProgressCallback | None = None) -> Any:
        """A backend's own operation, held to the same rules: capability, one change at a
        time on ``vm``, its allowed ``states``, the deadline, and a Task: a row made on
        the spot."""
        rule = Rule(what, capability, states, "allowed", "the VM" if vm is not None else "")
        return self.operate(rule, what, lambda job, case: work(job), _keep,
                            vm_id=vm.id if vm is not None else None,
                            vm_name=vm.name if vm is not None else "",
                            args={"what": what}, wait=wait, timeout=timeout,
                            on_progress=on_progress)


__all__ = ["ALLOWED_FROM", "ANY_STATE", "DELETABLE", "RULES", "AnyvirtError", "Connection", "Gate",
           "HeldVM", "Rule",
           "VMRef", "check_power_state", "operations_markdown", "takes_vms"]
