"""The operation gate: every operation's rules in one table, enforced in one place.

Handles (``Host``, ``VM``, ``Snapshot``, ``Node``) make one call into the
:class:`Gate`; the gate checks, in this order, before anything is sent:

1. the connection is open and has the operation's **capability** (and the
   refined ones the case needs: a clone of a running VM, a migration that
   carries snapshots): else ``NotSupported``;
2. the user's input: every string by its field's rule (``anyvirt.validation``:
   the core's rule, then the backend's ``check_vm_name``, ``check_snapshot_name``,
   ``check_description``, ``check_storage_name``, ``check_network_name``,
   ``check_image``), placement options the backend takes: else ``InvalidSpec``;
3. **one change at a time per VM**: the VM (and any name being made) is held
   for this operation until its work really ends: else ``InvalidState`` (busy)
   or ``AlreadyExists``;
4. the VM is re-read under that hold, and its **power state** and template
   flag checked against the table: else ``InvalidState``;
5. the **preconditions**: a free name, a node that takes VMs, no linked clone
   left broken, and a **capacity reservation** (create, clone, restore,
   reconfigure, revert, migration to another host) against the overcommit
   limit: else ``AlreadyExists`` / ``NotFound`` / ``InvalidState`` /
   ``CapacityExceeded``.

Then the driver's primitive runs as a :class:`~anyvirt.tasks.Task` whose
deadline (``timeout=``) started when the gate was entered and bounds the
whole operation: past it the caller gets ``Timeout`` at once, the platform is
asked to stop, and what a create, clone or snapshot still makes afterwards is
removed. Drivers therefore receive only what passed, and hold only platform
primitives.

The same table generates the support matrix's operation list and the
operations section of the concepts page, so the docs cannot drift from this
code. Nova keeps instance-state rules above its drivers the same way
(``check_instance_state``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from attrs import frozen

from anyvirt import holds, validation
from anyvirt.errors import (
    AlreadyExists,
    AnyvirtError,
    InvalidSpec,
    InvalidState,
    NotFound,
    OutcomeUnknown,
)
from anyvirt.model import (
    ACTION_CAPABILITY,
    Capability,
    MigrationResult,
    Placement,
    PowerAction,
    PowerState,
    SnapshotInfo,
    VMSpec,
    VMSummary,
    check_name,
    evolve,
)
from anyvirt.tasks import Job, ProgressCallback, Task

if TYPE_CHECKING:
    from anyvirt.capacity import Reservation
    from anyvirt.driver import Driver
    from anyvirt.host import Host
    from anyvirt.node import Node
    from anyvirt.snapshot import Snapshot
    from anyvirt.vm import VM

T = TypeVar("T")
log = logging.getLogger("anyvirt")


class _Releasable(Protocol):
    def release(self) -> None: ...


R, S, P, SU, C, U = (
    PowerState.RUNNING,
    PowerState.STOPPED,
    PowerState.PAUSED,
    PowerState.SUSPENDED,
    PowerState.CRASHED,
    PowerState.UNKNOWN,
)
ANY_STATE = frozenset(PowerState)


@frozen
class Rule:
    """One row of the table: what an operation needs before its driver call."""

    call: str  #: how users call it
    capability: Capability | None
    states: frozenset[PowerState]  #: power states the VM may be in
    templates: str  #: "refused", "allowed" or "only"
    holds: str  #: what is held for one change at a time ("" for nothing)
    capacity: str  #: what is reserved against the overcommit limit ("" for nothing)
    preconditions: tuple[str, ...] = ()
    refined_by: tuple[Capability, ...] = ()  #: capabilities some cases of it need too
    result: str = "the VM"


def _power_rule(action: PowerAction, call: str, result: str = "the VM") -> Rule:
    return Rule(call, ACTION_CAPABILITY[action], ALLOWED_FROM[action], "refused", "the VM", "",
                result=result)


#: Power states each lifecycle verb is allowed from.
ALLOWED_FROM: dict[PowerAction, frozenset[PowerState]] = {
    PowerAction.START: frozenset({S, SU, C}),
    PowerAction.STOP: frozenset({R}),
    PowerAction.POWER_OFF: frozenset({R, P, SU, C}),
    PowerAction.REBOOT: frozenset({R}),
    PowerAction.RESET: frozenset({R}),
    PowerAction.PAUSE: frozenset({R}),
    PowerAction.RESUME: frozenset({P, SU}),
    PowerAction.SUSPEND: frozenset({R, P}),
}

DELETABLE = frozenset({S, SU, C, U})

RULES: dict[str, Rule] = {
    "create": Rule(
        "host.vms.create(spec)", Capability.VM_CREATE, ANY_STATE, "allowed", "the new name",
        "the spec's CPUs and memory",
        ("the name is valid and free", "image files are readable, without backing files",
         "the node exists and takes VMs"),
        (Capability.VM_CREATE_FROM_IMAGE,)),
    "start": _power_rule(PowerAction.START, "vm.start()"),
    "stop": _power_rule(PowerAction.STOP, "vm.stop()"),
    "power_off": _power_rule(PowerAction.POWER_OFF, "vm.stop(force=True)"),
    "reboot": _power_rule(PowerAction.REBOOT, "vm.reboot()"),
    "reset": _power_rule(PowerAction.RESET, "vm.reset()"),
    "pause": _power_rule(PowerAction.PAUSE, "vm.pause()"),
    "resume": _power_rule(PowerAction.RESUME, "vm.resume()"),
    "suspend": _power_rule(PowerAction.SUSPEND, "vm.suspend()"),
    "reconfigure": Rule(
        # not while suspended: the saved memory image belongs to the hardware it was saved on
        "vm.reconfigure(cpus, memory_mib)", Capability.RECONFIGURE, frozenset({S, R, P, C}),
        "refused", "the VM", "the CPUs and memory added",
        ("cpus and memory_mib are whole numbers >= 1",),
        result="True if applied live, False if at the next start"),
    "delete": Rule(
        "vm.delete(disks=True)", Capability.VM_DELETE, DELETABLE, "allowed", "the VM", "",
        ("with disks=True, no linked clone uses its disks",), (Capability.DELETE_KEEP_DISKS,),
        result="None"),
    "mark_template": Rule(
        "vm.mark_template()", Capability.TEMPLATES, frozenset({S}), "refused", "the VM", ""),
    "convert_to_vm": Rule(
        "template.convert_to_vm(node=None)", Capability.TEMPLATE_TO_VM, ANY_STATE, "only", "the VM", "",
        ("the node exists and takes VMs",)),
    "clone": Rule(
        "vm.clone(name, linked=False, count=None, placement)", Capability.FULL_CLONE,
        frozenset({S, R, P, SU, C}), "allowed", "the VM and the new names",
        "the source's CPUs and memory per clone, read under the hold",
        ("every new name is valid and free", "the node exists and takes VMs",
         "placement options the backend takes"),
        (Capability.LINKED_CLONE, Capability.LINKED_CLONE_OF_TEMPLATE, Capability.CLONE_RUNNING),
        result="the new VM (a list with count=)"),
    "snapshot_create": Rule(
        "vm.snapshots.create(name, memory=False)", Capability.SNAPSHOTS, ANY_STATE - {U},
        "refused", "the VM", "", ("the snapshot name is valid and free on the VM",),
        (Capability.MEMORY_SNAPSHOTS,), result="the Snapshot"),
    "snapshot_revert": Rule(
        "snapshot.revert()", Capability.SNAPSHOTS, ANY_STATE, "refused", "the VM",
        "the CPUs and memory the snapshot brings back beyond the VM's",
        ("the snapshot exists",), result="the Snapshot"),
    "snapshot_delete": Rule(
        "snapshot.delete(children=False)", Capability.SNAPSHOTS, ANY_STATE, "allowed", "the VM", "",
        ("the snapshot exists",), result="None"),
    "migrate": Rule(
        # not suspended: its saved memory image is local to the node; start it and migrate
        # live, or power it off and migrate cold
        "vm.migrate(to, live=None, placement)", Capability.COLD_MIGRATION,
        frozenset({S, R, C}), "allowed", "the VM (and its name on the target host)",
        "on another host: the VM's CPUs and memory there",
        ("live needs a running VM, cold one not running", "the target is another node or host "
         "of the same backend", "on another host: the name is free and no linked clone "
         "depends on the VM"),
        (Capability.LIVE_MIGRATION, Capability.COLD_MIGRATION_SNAPSHOTS,
         Capability.LIVE_MIGRATION_SNAPSHOTS), result="a MigrationResult"),
    "export": Rule(
        "vm.backup(path), anyvirt.migrate(vm, to)", Capability.DISK_EXPORT,
        frozenset({S, SU, C}), "allowed", "the VM", "",
        ("the disks do not change while copied",), result="the archive path / MigrationResult"),
    "restore": Rule(
        "host.restore(path, name=None)", Capability.VM_CREATE, ANY_STATE, "allowed",
        "the new name (through create)", "the archived CPUs and memory",
        ("the name is valid and free", "the archive is read before anything is made"),
        (Capability.VM_CREATE_FROM_IMAGE,)),
    "set_maintenance": Rule(
        "node.set_maintenance(on)", Capability.MAINTENANCE_MODE, ANY_STATE, "allowed", "", "",
        ("entering: no VM is left on the node",), result="the Node"),
}

_HINTS: dict[tuple[PowerAction, PowerState], str] = {
    (PowerAction.START, R): "nothing to do",
    (PowerAction.START, P): "resume it instead",
    (PowerAction.STOP, S): "nothing to do",
    (PowerAction.STOP, P): "resume it first, or force a power-off",
    (PowerAction.STOP, SU): "start it first, or force a power-off",
    (PowerAction.POWER_OFF, S): "nothing to do",
}


def _states(states: Iterable[PowerState]) -> str:
    return " or ".join(sorted(s.value for s in states))


def check_power_state(action: PowerAction, state: PowerState, vm_name: str) -> None:
    """The state rule of one lifecycle verb; ``InvalidState`` with a hint otherwise."""
    if state in ALLOWED_FROM[action]:
        return
    verb = action.value.replace("_", " ")
    hint = _HINTS.get((action, state), f"that needs it {_states(ALLOWED_FROM[action])}")
    raise InvalidState(f"cannot {verb} VM {vm_name!r}: it is {state}; {hint}")


class Gate:
    """The one way into a driver. ``host.gate``; handles call it, users need not."""

    def __init__(self, host: Host) -> None:
        self.host = host

    # ------------------------------------------------------------ the generic pass
    def require(self, capability: Capability) -> None:
        self.host.require(capability)  # NotSupported, with the driver's why_not

    def _hold(self, name: str, vm: VM | None, ids: Sequence[str] = (),
              names: Sequence[str] = (), host: Host | None = None) -> holds.Hold:
        target = host or self.host
        vm_ids = ([vm.id] if vm is not None else []) + list(ids)
        try:
            return holds.take(target.uri, vm_ids, names, name)
        except holds.Busy as busy:
            if busy.kind == "name":
                raise AlreadyExists(
                    f"a VM named {busy.value!r} is being made on {target.uri} ({busy.what})"
                ) from None
            who = vm.name if vm is not None else busy.value
            raise InvalidState(
                f"cannot {name}: VM {who!r} is busy ({busy.what}); try again when that is done"
            ) from None

    def _reread(self, rule: Rule, vm: VM, what: str, hint: str = "") -> VMSummary:
        """Re-read the VM under the hold and apply the table's state and template rules;
        ``hint`` says what to do about a wrong state."""
        summary = self.host.driver.vm_summary(vm.id)
        vm._summary = summary
        if rule.templates == "refused" and summary.template:
            raise InvalidState(
                f"cannot {what}: {vm.name!r} is a template; clone it to get a VM, or convert it "
                "back to a VM"
            )
        if rule.templates == "only" and not summary.template:
            raise InvalidState(f"cannot {what}: {vm.name!r} is not a template")
        if summary.state not in rule.states:
            raise InvalidState(
                f"cannot {what}: {vm.name!r} is {summary.state}; "
                f"{hint or 'that needs it ' + _states(rule.states)}"
            )
        return summary

    def _run(
        self,
        name: str,
        entered: float,
        work: Callable[[Job], T],
        *,
        hold: _Releasable | None,
        reservation: Reservation | None = None,
        undo: Callable[[T], None] | None = None,
        wait: bool,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        vm_id: str = "",
        vm_name: str = "",
    ) -> T | Task[T]:
        def finish() -> None:
            if reservation is not None:
                reservation.release()
            if hold is not None:
                hold.release()

        def work_naming_the_vm(job: Job) -> T:
            try:
                return work(job)
            except OutcomeUnknown as unknown:  # the driver may not know which VM it was
                unknown.concerning(vm_id=vm_id, vm_name=vm_name)
                raise

        task = Task(name, work_naming_the_vm, timeout=timeout, on_progress=on_progress,
                    backend=self.host.backend,
                    cancellable=Capability.TASK_CANCEL in self.host.capabilities, finish=finish,
                    undo=undo, started=entered)
        return task.run_here() if wait else task.start()

    @contextlib.contextmanager
    def _checking(self, hold: holds.Hold | None) -> Any:
        """Give the hold back if a check fails before the work starts."""
        try:
            yield
        except BaseException:
            if hold is not None:
                hold.release()
            raise

    # ------------------------------------------------------------ names and places
    def check_new_name(self, name: str, what: str = "name", host: Host | None = None) -> str:
        target = host or self.host
        check_name(name, what)
        self._platform_rule(target, "VM name", target.driver.check_vm_name, name, what)
        return name

    @staticmethod
    def _platform_rule(host: Host, field: str, hook: Callable[[str, str], None], value: str,
                       what: str) -> None:
        """A backend's rule for a field; its ``InvalidSpec`` names the field and, where the
        backend did not, the rule as "<backend> rule"."""
        try:
            hook(value, what)
        except InvalidSpec as refused:
            if not refused.field:
                refused.field, refused.rule = field, f"{host.backend} rule"
            raise

    def check_spec_strings(self, spec: VMSpec) -> None:
        """The backend's rules for the spec's other strings (the core's ran when it was made)."""
        host, driver = self.host, self.host.driver
        self._platform_rule(host, "description", driver.check_description, spec.description,
                            "description")
        for disk in spec.disks:
            if disk.storage is not None:
                self._platform_rule(host, "storage", driver.check_storage_name, disk.storage,
                                    "DiskSpec.storage")
        for nic in spec.nics:
            if nic.network is not None:
                self._platform_rule(host, "network", driver.check_network_name, nic.network,
                                    "NicSpec.network")

    def _name_free(self, name: str, host: Host | None = None) -> None:
        target = host or self.host
        if target.vms.exists(name):
            raise AlreadyExists(f"a VM named {name!r} exists already on {target.uri}")

    def check_node(self, node: str | None, host: Host | None = None) -> str | None:
        """A node given by id or name -> its id; it must exist and take VMs."""
        if node is None:
            return None
        target = host or self.host
        info = target.nodes.get(node).info
        if info.maintenance:
            raise InvalidState(f"node {info.name!r} is in maintenance: it takes no VMs")
        return info.id

    def check_placement(self, placement: Placement, host: Host | None = None) -> Placement:
        target = host or self.host
        offered = target.driver.placement_options
        unknown = sorted(placement.given() - offered - {"node"})
        if unknown:
            raise InvalidSpec(
                f"{target.backend} takes no {', '.join(unknown)} placement"
                f" (it takes: {', '.join(sorted(offered | {'node'}))})"
            )
        if placement.storage is not None:
            self._platform_rule(target, "storage", target.driver.check_storage_name,
                                placement.storage, "placement storage")
        return evolve(placement, node=self.check_node(placement.node, target))

    def _reserve(self, cpus: int, memory_mib: int, host: Host | None = None) -> Reservation | None:
        if cpus <= 0 and memory_mib <= 0:
            return None
        return (host or self.host).reserve_capacity(max(cpus, 0), max(memory_mib, 0))

    # ------------------------------------------------------------ create
    def create(self, spec: VMSpec, *, wait: bool, timeout: float | None,
               on_progress: ProgressCallback | None) -> Any:
        from anyvirt.vm import VM

        entered = time.monotonic()
        host = self.host
        if not isinstance(spec, VMSpec):
            raise InvalidSpec(f"create() takes a VMSpec, not {type(spec).__name__}")
        self.require(Capability.VM_CREATE)
        if any(d.image is not None for d in spec.disks):
            self.require(Capability.VM_CREATE_FROM_IMAGE)
        self.check_new_name(spec.name)
        self.check_spec_strings(spec)
        driver = host.driver
        hold = self._hold(f"create {spec.name}", None, names=[spec.name])
        with self._checking(hold):
            for disk in spec.disks:
                if disk.image is not None:
                    self._platform_rule(host, "disk image", lambda image, _what: driver.check_image(image),
                                        disk.image, "disk image")
            if spec.node is not None:
                spec = evolve(spec, node=self.check_node(spec.node))
            self._name_free(spec.name)
            reservation = self._reserve(spec.cpus, spec.memory_mib)

        def work(job: Job) -> VM:
            return VM(host, driver.create_vm(spec, job))

        return self._run(f"create {spec.name}", entered, work, hold=hold, reservation=reservation,
                         undo=lambda vm: self._remove(vm.id), wait=wait, timeout=timeout,
                         on_progress=on_progress, vm_name=spec.name)

    def _remove(self, vm_id: str) -> None:
        """Undo a create or clone that finished after its caller was told Timeout."""
        driver = self.host.driver
        job = Job("remove a VM made after its deadline", 300)
        summary = driver.vm_summary(vm_id)
        if summary.state in (R, P):
            driver.power(vm_id, PowerAction.POWER_OFF, job)
        driver.delete_vm(vm_id, True, job)

    # ------------------------------------------------------------ lifecycle
    def power(self, vm: VM, action: PowerAction, *, wait: bool, timeout: float | None,
              on_progress: ProgressCallback | None) -> Any:
        entered = time.monotonic()
        rule = RULES[action.value]
        assert rule.capability is not None
        self.require(rule.capability)
        verb = action.value.replace("_", " ")
        hold = self._hold(f"{verb} {vm.name}", vm)
        with self._checking(hold):
            summary = self.host.driver.vm_summary(vm.id)
            vm._summary = summary
            if summary.template:
                raise InvalidState(
                    f"cannot {verb} {vm.name!r}: it is a template; clone it to get a VM that runs"
                )
            if action is PowerAction.RESUME and summary.state is SU:
                action = PowerAction.START  # a suspended VM resumes by starting from its saved state
            check_power_state(action, summary.state, vm.name)
        driver = self.host.driver
        chosen = action

        def work(job: Job) -> VM:
            driver.power(vm.id, chosen, job)
            try:
                return vm.refresh()
            except NotFound:
                if chosen not in (PowerAction.STOP, PowerAction.POWER_OFF):
                    raise
                # a transient VM (libvirt's virsh create) is gone once it is off: it stopped
                vm._summary = evolve(vm._summary, state=S, raw_state="gone (transient)")
                return vm

        return self._run(f"{verb} {vm.name}", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold, wait=wait,
                         timeout=timeout, on_progress=on_progress)

    def reconfigure(self, vm: VM, cpus: int | None, memory_mib: int | None, *, wait: bool,
                    timeout: float | None) -> Any:
        entered = time.monotonic()
        self.require(Capability.RECONFIGURE)
        for label, value in (("cpus", cpus), ("memory_mib", memory_mib)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise InvalidSpec(f"{label} must be a whole number of at least 1, not {value!r}")
        if cpus is None and memory_mib is None:
            raise InvalidSpec("reconfigure() needs cpus or memory_mib")
        rule = RULES["reconfigure"]
        hold = self._hold(f"reconfigure {vm.name}", vm)
        with self._checking(hold):
            summary = self._reread(rule, vm, f"reconfigure {vm.name!r}")
            reservation = self._reserve(
                (cpus - summary.cpus) if cpus is not None else 0,
                (memory_mib - summary.memory_mib) if memory_mib is not None else 0)
        driver = self.host.driver

        def work(job: Job) -> bool:
            live = driver.reconfigure_vm(vm.id, cpus, memory_mib, job)
            vm.refresh()
            return live

        return self._run(f"reconfigure {vm.name}", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold,
                         reservation=reservation, wait=wait, timeout=timeout, on_progress=None)

    def delete(self, vm: VM, disks: bool, *, wait: bool, timeout: float | None) -> Any:
        entered = time.monotonic()
        rule = RULES["delete"]
        self.require(Capability.VM_DELETE)
        if not disks:
            self.require(Capability.DELETE_KEEP_DISKS)
        hold = self._hold(f"delete {vm.name}", vm)
        with self._checking(hold):
            self._reread(rule, vm, f"delete VM {vm.name!r}",
                         "stop it first (a forced power-off if need be)")
            if disks:
                users = self.host.driver.linked_clones(vm.id)
                if users:
                    raise InvalidState(
                        f"cannot delete VM {vm.name!r} with its disks: linked clones use them "
                        f"({', '.join(sorted(users))}); delete those first, or delete with "
                        "disks=False to keep the disks they read"
                    )
        driver = self.host.driver

        def work(job: Job) -> None:
            driver.delete_vm(vm.id, bool(disks), job)

        return self._run(f"delete {vm.name}", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold, wait=wait,
                         timeout=timeout, on_progress=None)

    # ------------------------------------------------------------ templates
    def mark_template(self, vm: VM, *, wait: bool, timeout: float | None) -> Any:
        entered = time.monotonic()
        rule = RULES["mark_template"]
        self.require(Capability.TEMPLATES)
        hold = self._hold(f"mark {vm.name} as a template", vm)
        with self._checking(hold):
            summary = self.host.driver.vm_summary(vm.id)
            vm._summary = summary
            if summary.template:
                raise InvalidState(f"VM {vm.name!r} is a template already")
            if summary.state not in rule.states:
                raise InvalidState(
                    f"only a stopped VM can become a template; {vm.name!r} is {summary.state}"
                )
        driver = self.host.driver

        def work(job: Job) -> VM:
            vm._summary = driver.mark_template(vm.id, job)
            return vm

        return self._run(f"mark {vm.name} as a template", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold, wait=wait,
                         timeout=timeout, on_progress=None)

    def convert_to_vm(self, vm: VM, node: str | None, *, wait: bool, timeout: float | None) -> Any:
        entered = time.monotonic()
        rule = RULES["convert_to_vm"]
        self.require(Capability.TEMPLATE_TO_VM)
        hold = self._hold(f"convert {vm.name} to a VM", vm)
        with self._checking(hold):
            self._reread(rule, vm, f"convert {vm.name!r} to a VM")
            node_id = self.check_node(node)
        driver = self.host.driver

        def work(job: Job) -> VM:
            vm._summary = driver.convert_to_vm(vm.id, node_id, job)
            return vm

        return self._run(f"convert {vm.name} to a VM", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold, wait=wait,
                         timeout=timeout, on_progress=None)

    # ------------------------------------------------------------ clones
    def clone(self, vm: VM, name: str, linked: bool, count: int | None, placement: Placement, *,
              wait: bool, timeout: float | None, on_progress: ProgressCallback | None) -> Any:
        from anyvirt.vm import VM

        entered = time.monotonic()
        rule = RULES["clone"]
        caps = self.host.capabilities
        if not linked:
            self.require(Capability.FULL_CLONE)
        elif Capability.LINKED_CLONE_OF_TEMPLATE not in caps:
            self.require(Capability.LINKED_CLONE)  # of templates only, if at all: checked below
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise InvalidSpec(f"count must be a whole number of at least 1, not {count!r}")
        self.check_new_name(name, "clone name")
        names = [name] if count is None else [f"{name}-{i}" for i in range(1, count + 1)]
        for n in names:
            self.check_new_name(n, "clone name")
        if not isinstance(placement, Placement):
            raise InvalidSpec(f"placement must be a Placement, not {type(placement).__name__}")
        hold = self._hold(f"clone {vm.name}", vm, names=names)
        with self._checking(hold):
            summary = self._reread(rule, vm, f"clone {vm.name!r}")
            if linked and not (summary.template and Capability.LINKED_CLONE_OF_TEMPLATE in caps):
                self.require(Capability.LINKED_CLONE)
            if summary.state in (R, P):
                self.require(Capability.CLONE_RUNNING)
            placement = self.check_placement(placement)
            for n in names:
                self._name_free(n)
            # read under the hold: the source cannot be reconfigured before it is copied
            reservation = self._reserve(summary.cpus * len(names), summary.memory_mib * len(names))
        driver = self.host.driver
        host = self.host

        def work(job: Job) -> Any:
            made = [VM(host, s) for s in driver.clone_vms(vm.id, names, linked, placement, job)]
            return made if count is not None else made[0]

        def undo(result: Any) -> None:
            for clone in result if isinstance(result, list) else [result]:
                self._remove(clone.id)

        return self._run(f"clone {vm.name}", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold, reservation=reservation,
                         undo=undo, wait=wait, timeout=timeout, on_progress=on_progress)

    # ------------------------------------------------------------ snapshots
    def snapshot_create(self, vm: VM, name: str, description: str, memory: bool, *, wait: bool,
                        timeout: float | None) -> Any:
        from anyvirt.snapshot import Snapshot as SnapshotHandle

        entered = time.monotonic()
        rule = RULES["snapshot_create"]
        name = validation.SNAPSHOT_NAME.check(name)
        description = validation.DESCRIPTION.check(description)
        self.require(Capability.SNAPSHOTS)
        self._platform_rule(self.host, "snapshot name", self.host.driver.check_snapshot_name, name,
                            "snapshot name")
        self._platform_rule(self.host, "description", self.host.driver.check_description,
                            description, "snapshot description")
        hold = self._hold(f"snapshot {vm.name} as {name}", vm)
        with self._checking(hold):
            summary = self._reread(rule, vm, f"snapshot {vm.name!r}")
            with_memory = bool(memory) and summary.state in (R, P)
            if with_memory:
                self.require(Capability.MEMORY_SNAPSHOTS)
            if any(s.name == name for s in self.host.driver.list_snapshots(vm.id)):
                raise AlreadyExists(f"VM {vm.name!r} has a snapshot named {name!r} already")
        driver = self.host.driver

        def work(job: Job) -> Snapshot:
            return SnapshotHandle(vm, driver.create_snapshot(vm.id, name, description, with_memory,
                                                             job))

        def undo(snap: Snapshot) -> None:
            driver.delete_snapshot(vm.id, snap.id, False, Job("remove a late snapshot", 300))

        return self._run(f"snapshot {vm.name} as {name}", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold, undo=undo,
                         wait=wait, timeout=timeout, on_progress=None)

    def _snapshot_now(self, vm: VM, snapshot_id: str) -> SnapshotInfo:
        for info in self.host.driver.list_snapshots(vm.id):
            if info.id == snapshot_id:
                return info
        raise NotFound(f"VM {vm.name!r} has no snapshot with id {snapshot_id!r} (any more)")

    def snapshot_revert(self, snap: Snapshot, *, wait: bool, timeout: float | None) -> Any:
        entered = time.monotonic()
        vm, snapshot_id, label = snap.vm, snap.id, snap.name
        rule = RULES["snapshot_revert"]
        self.require(Capability.SNAPSHOTS)
        hold = self._hold(f"revert {vm.name} to {label}", vm)
        with self._checking(hold):
            summary = self._reread(rule, vm, f"revert {vm.name!r}")
            info = self._snapshot_now(vm, snapshot_id)
            reservation = self._reserve(
                (info.cpus - summary.cpus) if info.cpus is not None else 0,
                (info.memory_mib - summary.memory_mib) if info.memory_mib is not None else 0)
        driver = self.host.driver

        def work(job: Job) -> Snapshot:
            driver.revert_snapshot(vm.id, snapshot_id, job)
            vm.refresh()
            return snap

        return self._run(f"revert {vm.name} to {label}", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold,
                         reservation=reservation, wait=wait, timeout=timeout, on_progress=None)

    def snapshot_delete(self, snap: Snapshot, children: bool, *, wait: bool,
                        timeout: float | None) -> Any:
        entered = time.monotonic()
        vm, snapshot_id, label = snap.vm, snap.id, snap.name
        self.require(Capability.SNAPSHOTS)
        hold = self._hold(f"delete snapshot {label} of {vm.name}", vm)
        with self._checking(hold):
            self._reread(RULES["snapshot_delete"], vm, f"delete a snapshot of {vm.name!r}")
            self._snapshot_now(vm, snapshot_id)
        driver = self.host.driver

        def work(job: Job) -> None:
            driver.delete_snapshot(vm.id, snapshot_id, bool(children), job)

        return self._run(f"delete snapshot {label}", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold, wait=wait,
                         timeout=timeout, on_progress=None)

    # ------------------------------------------------------------ migration
    def migrate(self, vm: VM, to: Node | Host, live: bool | None, placement: Placement, *,
                wait: bool, timeout: float | None, on_progress: ProgressCallback | None) -> Any:
        from anyvirt.host import Host
        from anyvirt.node import Node

        entered = time.monotonic()
        rule = RULES["migrate"]
        if live is not None:
            self.require(Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION)
        if isinstance(to, Node):
            target_host, node = to.host, to.id
        elif isinstance(to, Host):
            if to is self.host:
                raise InvalidSpec(f"{vm.name!r} is already on {to.uri}: migrate to a node of it")
            target_host, node = to, None
        else:
            raise InvalidSpec(f"migrate(to=...) takes a Node or a Host, not {type(to).__name__}")
        if target_host.backend != self.host.backend:
            raise InvalidSpec(
                f"{self.host.backend} -> {target_host.backend} is a cross-platform move: "
                "use anyvirt.migrate(vm, to=host)"
            )
        if not isinstance(placement, Placement):
            raise InvalidSpec(f"placement must be a Placement, not {type(placement).__name__}")
        other_host = target_host is not self.host and target_host.uri != self.host.uri
        hold = self._hold(f"migrate {vm.name}", vm)
        name_hold: holds.Hold | None = None
        with self._checking(hold):
            summary = self._reread(rule, vm, f"migrate {vm.name!r}",
                                   "start it and migrate it live, or power it off first")
            running = summary.state is R
            live = running if live is None else live
            if live and not running:
                raise InvalidState(f"live migration needs {vm.name!r} running; it is {summary.state}")
            if not live and summary.state in (R, P):
                raise InvalidState(
                    f"cold migration needs {vm.name!r} stopped; it is {summary.state} (or migrate live)"
                )
            self.require(Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION)
            if Capability.SNAPSHOTS in self.host.capabilities and self.host.driver.list_snapshots(vm.id):
                self.require(Capability.LIVE_MIGRATION_SNAPSHOTS if live
                             else Capability.COLD_MIGRATION_SNAPSHOTS)
            placement = self.check_placement(evolve(placement, node=node or placement.node),
                                              target_host)
            if target_host is self.host and placement.node == summary.node and not (
                    placement.given() - {"node"}):
                raise InvalidSpec(f"{vm.name!r} is already on node {summary.node!r}")
            reservation = None
            if other_host:
                users = self.host.driver.linked_clones(vm.id)
                if users:
                    raise InvalidState(
                        f"cannot move {vm.name!r} to another host: linked clones use its disks "
                        f"({', '.join(sorted(users))})"
                    )
                name_hold = self._hold(f"migrate {vm.name} in", None, names=[vm.name],
                                       host=target_host)
        with self._checking(name_hold), self._checking(hold):
            if other_host:
                self._name_free(vm.name, target_host)
                reservation = self._reserve(summary.cpus, summary.memory_mib, target_host)
        both = _Both(hold, name_hold)
        target_driver: Driver | None = target_host.driver if target_host is not self.host else None
        driver = self.host.driver
        chosen_live = live

        def work(job: Job) -> MigrationResult:
            started = time.monotonic()
            result = driver.migrate_vm(vm.id, target_driver, placement, chosen_live, job)
            if target_driver is not None:
                vm._host = target_host
            with contextlib.suppress(NotFound):  # a backend may rename or re-id on arrival:
                vm._summary = vm.host.driver.vm_summary(result.vm_id)  # the handle follows
            if not result.duration_s:
                result = evolve(result, duration_s=round(time.monotonic() - started, 3))
            return result

        return self._run(f"migrate {vm.name}", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=both,
                         reservation=reservation, wait=wait, timeout=timeout,
                         on_progress=on_progress)

    # ------------------------------------------------------------ disks out, and back in
    def export(self, vm: VM, what: str, work: Callable[[Job], T], *, wait: bool,
               timeout: float | None, on_progress: ProgressCallback | None = None) -> Any:
        """Run ``work`` (a backup writer, a cross-platform move) while the VM is held and
        its disks cannot change: the source side of every copy goes through here."""
        entered = time.monotonic()
        rule = RULES["export"]
        self.require(Capability.DISK_EXPORT)
        hold = self._hold(f"{what} {vm.name}", vm)
        with self._checking(hold):
            self._reread(rule, vm, f"{what} {vm.name!r}",
                         "stop it first (its disks must not change while they are copied)")
        return self._run(f"{what} {vm.name}", entered, work, vm_id=vm.id, vm_name=vm.name,
                         hold=hold, wait=wait,
                         timeout=timeout, on_progress=on_progress)

    def check_restore(self, name: str, cpus: int, memory_mib: int, with_images: bool) -> None:
        """What a restore checks before it unpacks anything (its create checks again)."""
        self.require(Capability.VM_CREATE)
        if with_images:
            self.require(Capability.VM_CREATE_FROM_IMAGE)
        self.check_new_name(name)
        self._name_free(name)
        self.host.check_capacity(cpus, memory_mib)

    # ------------------------------------------------------------ nodes
    def set_maintenance(self, node: Node, on: bool, *, timeout: float | None) -> None:
        entered = time.monotonic()
        self.require(Capability.MAINTENANCE_MODE)
        if on:
            left = [vm.name for vm in node.vms()]
            if left:
                raise InvalidState(
                    f"node {node.name!r} still has VMs ({', '.join(sorted(left))}): evacuate it first"
                )
        driver = self.host.driver
        self._run(f"{'enter' if on else 'leave'} maintenance on {node.name}", entered,
                  lambda job: driver.set_maintenance(node.id, bool(on), job), hold=None,
                  wait=True, timeout=timeout, on_progress=None)

    # ------------------------------------------------------------ extensions
    def extension(self, what: str, work: Callable[[Job], T], *, capability: Capability | None,
                  vm: VM | None = None, states: frozenset[PowerState] = ANY_STATE,
                  wait: bool, timeout: float | None,
                  on_progress: ProgressCallback | None = None) -> Any:
        """A backend's own operation, held to the same rules: capability, one change at a
        time on ``vm``, its allowed ``states``, the deadline, and a Task."""
        entered = time.monotonic()
        if capability is not None:
            self.require(capability)
        hold = self._hold(what, vm) if vm is not None else None
        with self._checking(hold):
            if vm is not None:
                rule = Rule(what, capability, states, "allowed", "the VM", "")
                self._reread(rule, vm, what)
        return self._run(what, entered, work, hold=hold, wait=wait, timeout=timeout,
                         vm_id=vm.id if vm is not None else "",
                         vm_name=vm.name if vm is not None else "",
                         on_progress=on_progress)


class _Both:
    """Two holds given back together (a migration's VM and its name on the target)."""

    def __init__(self, *parts: holds.Hold | None) -> None:
        self._parts = parts

    def release(self) -> None:
        for part in self._parts:
            if part is not None:
                part.release()


def operations_markdown() -> str:
    """The table above as Markdown, for the concepts page."""
    rows = ["| operation | call | capability | allowed states | templates | held | capacity reserved |"
            " preconditions |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for op, rule in RULES.items():
        caps = f"`{rule.capability.value}`" if rule.capability else "-"
        if rule.refined_by:
            caps += " (+ " + ", ".join(f"`{c.value}`" for c in rule.refined_by) + ")"
        states = "any" if rule.states == ANY_STATE else ", ".join(sorted(s.value for s in rule.states))
        rows.append(
            f"| {op} | `{rule.call}` | {caps} | {states} | {rule.templates} | {rule.holds or '-'} | "
            f"{rule.capacity or '-'} | {'; '.join(rule.preconditions) or '-'} |"
        )
    return "\n".join(rows)


__all__ = ["ALLOWED_FROM", "DELETABLE", "RULES", "AnyvirtError", "Gate", "Rule",
           "check_power_state", "operations_markdown"]
