"""The operation table: what every operation needs before its driver primitive runs.

A leaf module (it imports only ``anyvirt.errors``, ``anyvirt.model`` and the identity
checks of ``anyvirt.deployment``): each
:class:`Rule` row names the operation's capability and the refinements some
of its cases need (each with the predicate that says when), the power states
and template rule, what it holds, what it reserves (a callable over plain
values), its input checks and its preconditions, all callables. The gate
(:mod:`anyvirt.operations`) enforces any row through one mechanism, and the
docs generator prints the same rows: a row's sentences are the first lines of
its callables' docstrings, so the documentation is the code.

Preconditions read the platform only through :class:`Reads`, which the gate
implements over ids and plain values; nothing here sees a handle or a driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, TypeVar

from attrs import define, field, frozen

from anyvirt import validation
from anyvirt.deployment.clones import for_clones
from anyvirt.deployment.identity import Identity
from anyvirt.errors import (
    AlreadyExists,
    CapacityExceeded,
    InvalidSpec,
    InvalidState,
    NotFound,
    NotSupported,
)
from anyvirt.model import (
    ACTION_CAPABILITY,
    Capability,
    NodeInfo,
    Placement,
    PowerAction,
    PowerState,
    RecoveryCandidate,
    SnapshotInfo,
    VMSpec,
    VMSummary,
    check_name,
    evolve,
)

R, S, P, SU, C, U = (
    PowerState.RUNNING,
    PowerState.STOPPED,
    PowerState.PAUSED,
    PowerState.SUSPENDED,
    PowerState.CRASHED,
    PowerState.UNKNOWN,
)
ANY_STATE = frozenset(PowerState)
DELETABLE = frozenset({S, SU, C, U})

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

_HINTS: dict[tuple[PowerAction, PowerState], str] = {
    (PowerAction.START, R): "nothing to do",
    (PowerAction.START, P): "resume it instead",
    (PowerAction.STOP, S): "nothing to do",
    (PowerAction.STOP, P): "resume it first, or force a power-off",
    (PowerAction.STOP, SU): "start it first, or force a power-off",
    (PowerAction.POWER_OFF, S): "nothing to do",
}


def states_text(states: Iterable[PowerState]) -> str:
    return " or ".join(sorted(s.value for s in states))


def check_power_state(action: PowerAction, state: PowerState, vm_name: str) -> None:
    """The state rule of one lifecycle verb; ``InvalidState`` with a hint otherwise."""
    if state in ALLOWED_FROM[action]:
        return
    verb = action.value.replace("_", " ")
    hint = _HINTS.get((action, state), f"that needs it {states_text(ALLOWED_FROM[action])}")
    raise InvalidState(f"cannot {verb} VM {vm_name!r}: it is {state}; {hint}")


# ---------------------------------------------------------------- what the gate offers a row

class Reads(Protocol):
    """What a row's callables may read of the platform, in ids and plain values. The gate
    implements it for the connection (and, for a move, the target connection)."""

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    def uri(self, *, on_target: bool = False) -> str: ...

    def backend(self, *, on_target: bool = False) -> str: ...

    def reaches_target(self) -> bool: ...

    def schedules(self, *, on_target: bool = False) -> bool: ...

    def bounds_vms(self, *, on_target: bool = False) -> bool: ...

    def running_takes(self, vm_id: str) -> frozenset[str]: ...

    def loads(self, *, on_target: bool = False) -> tuple[list[NodeInfo], list[tuple[str, int]]]: ...

    def name_taken(self, name: str, *, on_target: bool = False) -> bool: ...

    def node(self, ref: str, *, on_target: bool = False) -> NodeInfo: ...

    def node_vms(self, node_id: str) -> list[str]: ...

    def linked_clones(self, vm_id: str) -> list[str]: ...

    def is_linked_clone(self, vm_id: str) -> bool: ...

    def snapshots(self, vm_id: str) -> list[SnapshotInfo]: ...

    def placement(self, placement: Placement, *, on_target: bool = False) -> Placement: ...

    def check_image(self, image: str, format: str | None = None) -> None: ...

    def platform_rule(self, field: str, value: str, what: str) -> None: ...

    def hold_name_on_target(self, name: str, what: str) -> None: ...

    def hold_vms(self, vm_ids: Sequence[str], what: str) -> None: ...

    def why_not(self, capability: Capability) -> str: ...

    def recovery_candidates(self, node_id: str) -> list[RecoveryCandidate]: ...


@define
class Case:
    """One call of one operation, in plain values: what the user gave (``args``, settled
    by the checks as they go), the VM it concerns, and what the re-read found."""

    op: str
    reads: Reads
    args: dict[str, Any] = field(factory=dict)
    vm_id: str | None = None
    vm_name: str = ""
    #: names of VMs this call makes (held, and checked free)
    new_names: list[str] = field(factory=list)
    #: the VM as re-read under the hold
    summary: VMSummary | None = None
    #: whether the call moves the VM to another connection
    other_host: bool = False

    @property
    def vm(self) -> VMSummary:
        assert self.summary is not None, "read under the hold first"
        return self.summary


Check = Callable[[Case], None]
Predicate = Callable[[Case], bool]


@frozen
class Refinement:
    """A capability that the cases ``when`` says also need. ``after_reread``: ``when`` reads
    the VM's state, so it is asked under the hold (else before anything is held)."""

    capability: Capability
    when: Predicate
    after_reread: bool = False


@frozen
class Demand:
    """CPUs and memory to reserve against the overcommit limit (``on_target``: of the
    connection a VM moves to), under each counting rule of ``Overcommit.counts``:
    ``cpus`` and ``memory_mib`` are what the defined VMs grow by, ``powered_on`` what the
    powered-on ones grow by (None: the same)."""

    cpus: int
    memory_mib: int
    on_target: bool = False
    powered_on: tuple[int, int] | None = None

    def under(self, counts: str) -> tuple[int, int]:
        """The CPUs and memory this demands where ``counts`` is the rule."""
        if counts == "defined" or self.powered_on is None:
            return self.cpus, self.memory_mib
        return self.powered_on


#: a Demand's ``powered_on`` for what makes or changes only a stopped VM
NOT_POWERED_ON = (0, 0)


@frozen
class Rule:
    """One row of the table: what an operation needs before its driver primitive runs."""

    call: str  #: how users call it
    capability: Capability | None
    states: frozenset[PowerState]  #: power states the VM may be in
    templates: Literal["refused", "allowed", "only"]  #: whether a template may do it
    holds: str  #: what is held for one change at a time ("" for nothing)
    #: checks of the user's input, before anything is held (InvalidSpec)
    checks: tuple[Check, ...] = ()
    #: checks under the hold, after the re-read (AlreadyExists, NotFound, InvalidState, ...)
    preconditions: tuple[Check, ...] = ()
    refined_by: tuple[Refinement, ...] = ()
    #: the capability applies only to the cases this says (None: to every case)
    capability_when: Predicate | None = None
    #: what is reserved against the overcommit limit, from the case's plain values
    reserve: Callable[[Case], Demand] | None = None
    #: the re-read settles the request (a suspended VM "resumes" by starting)
    settle: Check | None = None
    #: the state check, where a verb words its refusal its own way (else the table's)
    state_check: Check | None = None
    state_hint: str = ""  #: what to do about a wrong state
    template_hint: str = "clone it to get a VM, or convert it back to a VM"
    result: str = "the VM"

    @property
    def reads_vm(self) -> bool:
        return self.holds.startswith("the VM")


F = TypeVar("F", bound=Callable[..., Any])


def raises(*errors: type[Exception]) -> Callable[[F], F]:
    """Declare the errors a check raises, next to its ``raise`` statements, for the docs
    (tests/gate/test_gate_operations.py proves each ``raise`` in it is declared)."""

    def declare(fn: F) -> F:
        fn.__raises__ = errors  # type: ignore[attr-defined]
        return fn

    return declare


def raised(fn: Callable[..., Any]) -> tuple[type[Exception], ...]:
    """The errors ``fn`` declares with :func:`raises`."""
    return tuple(getattr(fn, "__raises__", ()))


def doc(fn: Callable[..., Any]) -> str:
    """A callable's docs sentence: the first line of its docstring."""
    return (fn.__doc__ or fn.__name__).strip().splitlines()[0].rstrip(".")


# ---------------------------------------------------------------- the checks, one callable each

@raises(InvalidSpec)
def _whole_numbers(case: Case) -> None:
    """cpus and memory_mib are whole numbers >= 1"""
    cpus, memory = case.args.get("cpus"), case.args.get("memory_mib")
    for label, value in (("cpus", cpus), ("memory_mib", memory)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidSpec(f"{label} must be a whole number of at least 1, not {value!r}")
    if cpus is None and memory is None:
        raise InvalidSpec("reconfigure() needs cpus or memory_mib")


@raises(InvalidSpec)
def _a_spec(case: Case) -> None:
    """the spec is a VMSpec whose strings pass the backend's rules"""
    spec = case.args.get("spec")
    if not isinstance(spec, VMSpec):
        raise InvalidSpec(f"create() takes a VMSpec, not {type(spec).__name__}")
    case.new_names = [spec.name]
    _new_names_valid(case)
    case.reads.platform_rule("description", spec.description, "description")
    for disk in spec.disks:
        if disk.storage is not None:
            case.reads.platform_rule("storage", disk.storage, "DiskSpec.storage")
    for nic in spec.nics:
        if nic.network is not None:
            case.reads.platform_rule("network", nic.network, "NicSpec.network")


@raises(InvalidSpec)
def _new_names_valid(case: Case) -> None:
    """every new name is valid"""
    what = case.args.get("name_what", "name")
    for name in case.new_names:
        check_name(name, what)
        case.reads.platform_rule("VM name", name, what)


@raises(InvalidSpec)
def _clone_names(case: Case) -> None:
    """count is a whole number >= 1; every new name is valid"""
    count, name = case.args.get("count"), case.args["name"]
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise InvalidSpec(f"count must be a whole number of at least 1, not {count!r}")
    case.args["name_what"] = "clone name"
    case.new_names = [name]
    _new_names_valid(case)  # the base name first: its error names what the user wrote
    case.new_names = [name] if count is None else [f"{name}-{i}" for i in range(1, count + 1)]
    _new_names_valid(case)


@raises(InvalidSpec)
def _bulk_options(case: Case) -> None:
    """concurrency is a whole number >= 1"""
    concurrency = case.args.get("concurrency")
    if concurrency is not None and (isinstance(concurrency, bool)
                                    or not isinstance(concurrency, int) or concurrency < 1):
        raise InvalidSpec(f"concurrency must be a whole number of at least 1, not {concurrency!r}")


def _identity_of(case: Case) -> object:
    spec = case.args.get("spec")
    return spec.identity if isinstance(spec, VMSpec) else case.args.get("identity")


@raises(InvalidSpec)
def _identities(case: Case) -> None:
    """an identity is an anyvirt.Identity; each new VM gets its own (its host name, its
    instance id)"""
    identity = _identity_of(case)
    if identity is None:
        case.args["identities"] = None
        return
    if not isinstance(identity, Identity):
        raise InvalidSpec(f"identity must be an anyvirt.Identity, not {type(identity).__name__}")
    case.args["identities"] = for_clones(identity, case.new_names)


@raises(InvalidSpec)
def _snapshot_strings(case: Case) -> None:
    """the snapshot name and description are valid"""
    name = validation.SNAPSHOT_NAME.check(case.args["name"])
    description = validation.DESCRIPTION.check(case.args["description"])
    case.reads.platform_rule("snapshot name", name, "snapshot name")
    case.reads.platform_rule("description", description, "snapshot description")
    case.args.update(name=name, description=description)


@raises(InvalidSpec)
def _a_placement(case: Case) -> None:
    """placement is a Placement"""
    placement = case.args.get("placement")
    if not isinstance(placement, Placement):
        raise InvalidSpec(f"placement must be a Placement, not {type(placement).__name__}")


@raises(AlreadyExists)
def _names_free(case: Case) -> None:
    """every new name is free"""
    for name in case.new_names:
        if case.reads.name_taken(name, on_target=case.other_host):
            raise AlreadyExists(f"a VM named {name!r} exists already on "
                                f"{case.reads.uri(on_target=case.other_host)}")


def takes_vms(node: NodeInfo) -> bool:
    """the node exists and takes VMs (online, not in maintenance)"""
    return node.state == "online" and not node.maintenance


def least_loaded(nodes: Iterable[NodeInfo], vms: Iterable[tuple[str, int]],
                 *, where: str = "this connection") -> NodeInfo:
    """Where a new VM goes when the caller names no node: the node that takes VMs with the
    least memory given out. ``vms`` are (node id, memory MiB) pairs.

    "Load" is memory given out (the sum of the VMs' configured memory on the node,
    running or not), the resource a hypervisor runs out of first and the one a stopped
    VM still claims the moment it starts. Ties go to the node with the smallest id, so
    the choice is the same on every run. ``InvalidState`` when no node takes VMs.
    """
    candidates = {n.id: n for n in nodes if takes_vms(n)}
    if not candidates:
        raise InvalidState(f"no node of {where} takes new VMs (all in maintenance or offline)")
    load = dict.fromkeys(candidates, 0)
    for node, memory_mib in vms:
        if node in load:
            load[node] += memory_mib
    return candidates[min(load, key=lambda n: (load[n], n))]


def node_id(reads: Reads, ref: str | None, *, on_target: bool = False) -> str | None:
    """A node given by id or name -> its id; it must exist and take VMs."""
    if ref is None:
        return None
    info = reads.node(ref, on_target=on_target)
    if info.maintenance:
        raise InvalidState(f"node {info.name!r} is in maintenance: it takes no VMs")
    if not takes_vms(info):
        raise InvalidState(f"node {info.name!r} is {info.state}: it takes no VMs")
    return info.id


@raises(NotFound, InvalidState)
def _spec_node(case: Case) -> None:
    """the node exists and takes VMs"""
    spec: VMSpec = case.args["spec"]
    if spec.node is not None:
        case.args["spec"] = evolve(spec, node=node_id(case.reads, spec.node))


@raises(InvalidSpec)
def _images_readable(case: Case) -> None:
    """image files are readable, without backing files"""
    spec: VMSpec = case.args["spec"]
    for disk in spec.disks:
        if disk.image is not None:
            case.reads.check_image(disk.image, disk.format)


@raises(NotFound, InvalidState)
def _node_arg(case: Case) -> None:
    """the node exists and takes VMs"""
    case.args["node"] = node_id(case.reads, case.args.get("node"))


@raises(InvalidSpec, NotFound, InvalidState)
def _placement_taken(case: Case) -> None:
    """placement options the backend takes, on a node that exists and takes VMs"""
    case.args["placement"] = case.reads.placement(case.args["placement"],
                                                  on_target=case.other_host)


@raises(InvalidState)
def _no_linked_clone_broken(case: Case) -> None:
    """with disks=True, no linked clone uses its disks"""
    if not case.args.get("disks", True):
        return
    users = case.reads.linked_clones(case.vm.id)
    if users:
        raise InvalidState(
            f"cannot delete VM {case.vm_name!r} with its disks: linked clones use them "
            f"({', '.join(sorted(users))}); delete those first, or delete with "
            "disks=False to keep the disks they read"
        )


@raises(AlreadyExists)
def _snapshot_name_free(case: Case) -> None:
    """the snapshot name is valid and free on the VM"""
    name = case.args["name"]
    if any(s.name == name for s in case.reads.snapshots(case.vm.id)):
        raise AlreadyExists(f"VM {case.vm_name!r} has a snapshot named {name!r} already")


@raises(NotFound)
def _snapshot_exists(case: Case) -> None:
    """the snapshot exists"""
    wanted = case.args["snapshot_id"]
    for info in case.reads.snapshots(case.vm.id):
        if info.id == wanted:
            case.args["snapshot"] = info
            return
    raise NotFound(f"VM {case.vm_name!r} has no snapshot with id {wanted!r} (any more)")


@raises(InvalidState)
def _node_empty(case: Case) -> None:
    """entering: no VM is left on the node"""
    if not case.args["on"]:
        return
    left = case.reads.node_vms(case.args["node_id"])
    if left:
        raise InvalidState(
            f"node {case.args['node_name']!r} still has VMs ({', '.join(sorted(left))}): "
            "evacuate it first"
        )


@raises(InvalidState)
def _scheduled(case: Case) -> None:
    """with no node named, where the platform does not pick one itself: the node that takes
    VMs with the least memory given out"""
    spec = case.args.get("spec")
    placement = case.args.get("placement")
    named = spec.node if isinstance(spec, VMSpec) else placement.node if placement else None
    if named is not None or case.reads.schedules(on_target=case.other_host):
        return
    nodes, given = case.reads.loads(on_target=case.other_host)
    chosen = least_loaded(nodes, given, where=case.reads.uri(on_target=case.other_host)).id
    if isinstance(spec, VMSpec):
        case.args["spec"] = evolve(spec, node=chosen)
    else:
        case.args["placement"] = evolve(placement, node=chosen)


# -- one VM on one node

def fits_node(node: NodeInfo, cpus: int | None, memory_mib: int | None) -> None:
    """One VM gets no more vCPUs than its node has logical CPUs, and no more memory than
    the node has (figures the node does not report are not checked)."""
    if cpus is not None and node.cpus and cpus > node.cpus:
        raise CapacityExceeded(
            f"{cpus} CPUs asked for, but node {node.name!r} has {node.cpus} logical CPUs")
    if memory_mib is not None and node.memory_mib and memory_mib > node.memory_mib:
        raise CapacityExceeded(
            f"{memory_mib} MiB asked for, but node {node.name!r} has {node.memory_mib} MiB")


def _fit(case: Case, node: str | None, cpus: int | None, memory_mib: int | None,
         *, on_target: bool = False) -> None:
    """The node-size rule, where the platform has it (``Driver.bounds_vm_by_node``): on
    ``node``, or, where the platform places the VM itself, on some node that takes VMs."""
    if not case.reads.bounds_vms(on_target=on_target):
        return
    if node is not None:
        fits_node(case.reads.node(node, on_target=on_target), cpus, memory_mib)
        return
    nodes = [n for n in case.reads.loads(on_target=on_target)[0] if takes_vms(n)]
    refusals: list[CapacityExceeded] = []
    for info in sorted(nodes, key=lambda n: (-n.cpus, -n.memory_mib, n.id)):
        try:
            fits_node(info, cpus, memory_mib)
            return
        except CapacityExceeded as refused:
            refusals.append(refused)
    if refusals:
        raise refusals[0]


@raises(CapacityExceeded)
def _spec_fits_its_node(case: Case) -> None:
    """where the platform bounds a VM by its node: the spec fits the node"""
    spec: VMSpec = case.args["spec"]
    _fit(case, spec.node, spec.cpus, spec.memory_mib)


@raises(CapacityExceeded)
def _clone_fits_its_node(case: Case) -> None:
    """where the platform bounds a VM by its node: the source's size fits the clones' node"""
    placement: Placement = case.args["placement"]
    _fit(case, placement.node or case.vm.node, case.vm.cpus, case.vm.memory_mib)


@raises(CapacityExceeded)
def _new_size_fits_its_node(case: Case) -> None:
    """where the platform bounds a VM by its node: the new size fits the VM's node"""
    if case.vm.node is not None:
        _fit(case, case.vm.node, case.args.get("cpus"), case.args.get("memory_mib"))


@raises(CapacityExceeded)
def _fits_the_target_node(case: Case) -> None:
    """where the platform bounds a VM by its node: the VM fits the node it moves to"""
    placement: Placement = case.args["placement"]
    if placement.node is None and not case.other_host:
        return  # it stays on its node (its disks move)
    _fit(case, placement.node, case.vm.cpus, case.vm.memory_mib, on_target=case.other_host)


@raises(InvalidState)
def _running_takes_the_change(case: Case) -> None:
    """a running VM takes a change of each of cpus and memory_mib while it runs (vSphere:
    that hot-add is on)"""
    if case.vm.state is not R:
        return
    takes: frozenset[str] | None = None
    for field_name, label, now in (("cpus", "CPU", case.vm.cpus),
                                   ("memory_mib", "memory", case.vm.memory_mib)):
        value = case.args.get(field_name)
        if value is None or value == now:
            continue
        if takes is None:
            takes = case.reads.running_takes(case.vm.id)
        if field_name not in takes:
            raise InvalidState(
                f"cannot reconfigure {case.vm_name!r}: it is running and takes no {label} "
                f"change while it runs ({label} hot-add is off); stop it first")


# -- migration

def _live_by_default_when_running(case: Case) -> None:
    """live defaults to whether the VM runs"""
    if case.args.get("live") is None:
        case.args["live"] = case.vm.state is R


@raises(InvalidState)
def _live_matches_state(case: Case) -> None:
    """live needs a running VM, cold one not running"""
    state, live = case.vm.state, case.args["live"]
    if live and state is not R:
        raise InvalidState(f"live migration needs {case.vm_name!r} running; it is {state}")
    if not live and state in (R, P):
        raise InvalidState(
            f"cold migration needs {case.vm_name!r} stopped; it is {state} (or migrate live)")


@raises(InvalidSpec, NotSupported)
def _a_target_of_this_backend(case: Case) -> None:
    """the target is another node of this host, or a host of the same backend this one
    can reach"""
    here, there = case.reads.backend(), case.reads.backend(on_target=True)
    if case.args.get("same_host") and case.args["placement"].node is None:
        raise InvalidSpec(f"{case.vm_name!r} is already on {case.reads.uri()}: migrate to a "
                          "node of it")
    if here != there:
        raise InvalidSpec(f"{here} -> {there} is a cross-platform move: use "
                          "anyvirt.migrate(vm, to=host)")
    if case.other_host and not case.reads.reaches_target():
        live = case.args.get("live")
        raise NotSupported(here, Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION,
                           f"{case.reads.uri()} cannot move a VM to {case.reads.uri(on_target=True)}")


@raises(InvalidSpec)
def _moves_somewhere(case: Case) -> None:
    """the target is another node or host of the same backend"""
    placement: Placement = case.args["placement"]
    if not case.other_host and placement.node == case.vm.node and not (
            placement.given() - {"node"}):
        raise InvalidSpec(f"{case.vm_name!r} is already on node {case.vm.node!r}")


@raises(InvalidState)
def _leaves_no_linked_clone(case: Case) -> None:
    """on another host: no linked clone depends on the VM, and it is none itself"""
    if not case.other_host:
        return
    users = case.reads.linked_clones(case.vm.id)
    if users:
        raise InvalidState(
            f"cannot move {case.vm_name!r} to another host: linked clones use its disks "
            f"({', '.join(sorted(users))})"
        )
    if case.reads.is_linked_clone(case.vm.id):
        raise InvalidState(
            f"VM {case.vm_name!r} is a linked clone: its disks read from another VM's, so it "
            "cannot move to another host (make a full clone)"
        )


@raises(AlreadyExists)
def _name_free_on_target(case: Case) -> None:
    """on another host: the name is free there"""
    if not case.other_host:
        return
    case.reads.hold_name_on_target(case.vm_name, f"migrate {case.vm_name} in")
    if case.reads.name_taken(case.vm_name, on_target=True):
        raise AlreadyExists(f"a VM named {case.vm_name!r} exists already on "
                            f"{case.reads.uri(on_target=True)}")


# -- disks out: the source side of a copy

@raises(InvalidState)
def _no_snapshots_for_a_running_copy(case: Case) -> None:
    """the VM has no snapshots (a copy of it running exports what a new snapshot freezes)"""
    if case.reads.snapshots(case.vm.id):
        raise InvalidState(f"VM {case.vm_name!r} has snapshots: a point-in-time copy of it "
                           "running needs a VM without any (its base disks are older than "
                           "now); use shutdown=True")


def _deletes_source(case: Case) -> bool:
    """delete_source=True"""
    return bool(case.args.get("delete_source"))


@raises(InvalidState)
def _source_deletable(case: Case) -> None:
    """with delete_source=True: no linked clone uses its disks (it is deleted after the copy)"""
    if case.args.get("delete_source"):
        _no_linked_clone_broken(case)


def _copied_running(case: Case) -> bool:
    """the VM is copied while it runs"""
    return True


# -- evacuation

@raises(NotSupported)
def _moves_vms(case: Case) -> None:
    """the connection can migrate (live or cold)"""
    caps = case.reads.capabilities
    if not (Capability.LIVE_MIGRATION in caps or Capability.COLD_MIGRATION in caps):
        raise NotSupported(case.reads.backend(), Capability.COLD_MIGRATION,
                           "evacuate moves VMs by migration, which this connection cannot do")


def _ends_in_maintenance(case: Case) -> bool:
    """maintenance=True"""
    return bool(case.args.get("maintenance"))


# -- recovery of a failed node

#: node states that say the node answers: its VMs move by migration (evacuate), not recovery
ANSWERING = frozenset({"online", "maintenance"})


@raises(InvalidSpec)
def _recovery_input(case: Case) -> None:
    """fenced is True or False"""
    if not isinstance(case.args.get("fenced"), bool):
        raise InvalidSpec(f"fenced must be True or False, not {case.args.get('fenced')!r}")


@raises(NotFound, InvalidState)
def _node_down(case: Case) -> None:
    """the node no longer answers, and is proven down (offline) or fenced by the caller's
    word (fenced=True): never two running copies of one VM on one disk"""
    info = case.reads.node(case.args["node"])
    case.args.update(node_id=info.id, node_name=info.name, cluster=info.cluster)
    if info.state in ANSWERING:
        raise InvalidState(
            f"node {info.name!r} still answers ({info.state}): its VMs move by migration, "
            "host.evacuate(node); recovery is for a node that is down")
    if info.state != "offline" and not case.args["fenced"]:
        raise InvalidState(
            f"node {info.name!r} does not answer ({info.state}), but {case.reads.uri()} cannot "
            "prove it is down: its VMs may still run and write their disks. Fence it (power "
            "it off, e.g. through its BMC), then recover with fenced=True")


@raises(NotFound, InvalidState)
def _recovery_targets(case: Case) -> None:
    """to= names a node that takes VMs (so never the failed one); by default every live
    node of the failed node's cluster"""
    to = case.args.get("to")
    if to is not None:
        case.args["targets"] = [case.reads.node(str(node_id(case.reads, to)))]
        return
    nodes, _ = case.reads.loads()
    case.args["targets"] = [n for n in nodes if takes_vms(n) and n.id != case.args["node_id"]
                            and n.cluster == case.args["cluster"]]


@raises(NotSupported, InvalidState)
def _recovery_plan(case: Case) -> None:
    """what anyvirt brings back itself needs node.recover.restart and a live node to go
    to; the node's VMs are held until the recovery ends"""
    candidates = case.reads.recovery_candidates(case.args["node_id"])
    case.args["candidates"] = candidates
    ours = sorted(c.vm.name for c in candidates if c.by_cluster is None and not c.blocked)
    if ours and Capability.NODE_RECOVERY_RESTART not in case.reads.capabilities:
        raise NotSupported(
            case.reads.backend(), Capability.NODE_RECOVERY_RESTART,
            f"{case.reads.why_not(Capability.NODE_RECOVERY_RESTART)}; not recovered by the "
            f"cluster itself: {', '.join(ours)}")
    if ours and not case.args["targets"]:
        raise InvalidState(
            f"no live node of {case.args['cluster'] or case.reads.uri()} takes VMs: nowhere to "
            f"recover {', '.join(ours)} to")
    case.reads.hold_vms([c.vm.id for c in candidates], case.args["what"])


def _target_named(case: Case) -> bool:
    """to= is given (anyvirt chooses where each VM comes back)"""
    return case.args.get("to") is not None


# -- refinements: when a case needs more than the operation's capability

def _with_images(case: Case) -> bool:
    """a disk is made from an image"""
    spec = case.args.get("spec")
    return isinstance(spec, VMSpec) and any(d.image is not None for d in spec.disks)


def _restore_with_images(case: Case) -> bool:
    """the archive brings disk images"""
    return bool(case.args.get("with_images"))


def _keeps_disks(case: Case) -> bool:
    """disks=False keeps the disks"""
    return not case.args.get("disks", True)


def _full_clone(case: Case) -> bool:
    """a full clone"""
    return not case.args.get("linked")


def _linked_without_template_route(case: Case) -> bool:
    """a linked clone, where the connection does not clone templates linked"""
    return bool(case.args.get("linked")) and (
        Capability.LINKED_CLONE_OF_TEMPLATE not in case.reads.capabilities)


def _linked_of_a_vm(case: Case) -> bool:
    """a linked clone of a VM that is no template"""
    return bool(case.args.get("linked")) and not (
        case.vm.template and Capability.LINKED_CLONE_OF_TEMPLATE in case.reads.capabilities)


def _source_running(case: Case) -> bool:
    """the source runs or is paused"""
    return case.vm.state in (R, P)


def _memory_only_when_running(case: Case) -> None:
    """memory=True saves memory of a running or paused VM only"""
    case.args["memory"] = bool(case.args.get("memory")) and case.vm.state in (R, P)


def _with_memory(case: Case) -> bool:
    """memory=True of a running or paused VM"""
    return bool(case.args.get("memory"))


def _live_asked(case: Case) -> bool:
    """live=True is asked"""
    return case.args.get("live") is True


def _cold_asked(case: Case) -> bool:
    """live=False is asked"""
    return case.args.get("live") is False


def _live_with_snapshots(case: Case) -> bool:
    """a live move of a VM with snapshots"""
    return bool(case.args.get("live")) and _has_snapshots(case)


def _cold_with_snapshots(case: Case) -> bool:
    """a cold move of a VM with snapshots"""
    return not case.args.get("live") and _has_snapshots(case)


def _has_snapshots(case: Case) -> bool:
    return Capability.SNAPSHOTS in case.reads.capabilities and bool(
        case.reads.snapshots(case.vm.id))


def _live_chosen(case: Case) -> bool:
    """live, as chosen under the hold"""
    return bool(case.args.get("live"))


def _cold_chosen(case: Case) -> bool:
    """cold, as chosen under the hold"""
    return not case.args.get("live")


def _with_identity(case: Case) -> bool:
    """an identity is given"""
    return isinstance(_identity_of(case), Identity)


def _with_user_data(case: Case) -> bool:
    """the identity carries user_data"""
    identity = _identity_of(case)
    return isinstance(identity, Identity) and identity.user_data is not None


IDENTITY_REFINEMENTS = (Refinement(Capability.IDENTITY, _with_identity),
                        Refinement(Capability.IDENTITY_USER_DATA, _with_user_data))


# -- reservations

def _powered_on(state: PowerState | None) -> bool:
    return state in (R, P)


def _spec_size(case: Case) -> Demand:
    """the spec's CPUs and memory, where stopped VMs count (a new VM is stopped)"""
    spec: VMSpec = case.args["spec"]
    return Demand(spec.cpus, spec.memory_mib, powered_on=NOT_POWERED_ON)


def _clone_size(case: Case) -> Demand:
    """the source's CPUs and memory per clone, read under the hold, where stopped VMs
    count (a clone is stopped)"""
    n = len(case.new_names)
    return Demand(case.vm.cpus * n, case.vm.memory_mib * n, powered_on=NOT_POWERED_ON)


def _added(case: Case) -> Demand:
    """the CPUs and memory added (where only powered-on VMs count: if it is powered on)"""
    cpus, memory = case.args.get("cpus"), case.args.get("memory_mib")
    added = ((cpus - case.vm.cpus) if cpus is not None else 0,
             (memory - case.vm.memory_mib) if memory is not None else 0)
    return Demand(*added, powered_on=None if _powered_on(case.vm.state) else NOT_POWERED_ON)


def _brought_back(case: Case) -> Demand:
    """the CPUs and memory the snapshot brings back beyond the VM's (where only powered-on
    VMs count: what the revert powers on beyond what was)"""
    info: SnapshotInfo = case.args["snapshot"]
    vm = case.vm
    cpus = info.cpus if info.cpus is not None else vm.cpus
    memory = info.memory_mib if info.memory_mib is not None else vm.memory_mib
    was_on = _powered_on(vm.state)
    is_on = _powered_on(info.vm_state) if info.vm_state is not None else was_on
    powered_on = (cpus * is_on - vm.cpus * was_on, memory * is_on - vm.memory_mib * was_on)
    return Demand(cpus - vm.cpus, memory - vm.memory_mib, powered_on=powered_on)


def _moved_size(case: Case) -> Demand:
    """on another host: the VM's CPUs and memory there (where only powered-on VMs count:
    if it is powered on)"""
    if not case.other_host:
        return Demand(0, 0)
    return Demand(case.vm.cpus, case.vm.memory_mib, on_target=True,
                  powered_on=None if _powered_on(case.vm.state) else NOT_POWERED_ON)


def _archived_size(case: Case) -> Demand:
    """the archived CPUs and memory, where stopped VMs count (a restored VM is stopped)"""
    return Demand(case.args["cpus"], case.args["memory_mib"], powered_on=NOT_POWERED_ON)


def _powered_on_size(case: Case) -> Demand:
    """where only powered-on VMs count: the VM's CPUs and memory, if it was not powered on"""
    vm = case.vm
    if case.args["action"] is not PowerAction.START or _powered_on(vm.state):
        return Demand(0, 0)
    return Demand(0, 0, powered_on=(vm.cpus, vm.memory_mib))


# -- the power verbs

def _resume_suspended_starts(case: Case) -> None:
    """a suspended VM resumes by starting from its saved state"""
    if case.args["action"] is PowerAction.RESUME and case.vm.state is SU:
        case.args["action"] = PowerAction.START


@raises(InvalidState)
def _power_state(case: Case) -> None:
    """the verb's allowed states"""
    check_power_state(case.args["action"], case.vm.state, case.vm_name)


def _power_rule(action: PowerAction, call: str) -> Rule:
    # start, and resume (which starts a suspended VM), power a VM on
    powers_on = action in (PowerAction.START, PowerAction.RESUME)
    return Rule(call, ACTION_CAPABILITY[action], ALLOWED_FROM[action], "refused", "the VM",
                settle=_resume_suspended_starts, state_check=_power_state,
                reserve=_powered_on_size if powers_on else None,
                template_hint="clone it to get a VM that runs")


RULES: dict[str, Rule] = {
    "create": Rule(
        "host.vms.create(spec)", Capability.VM_CREATE, ANY_STATE, "allowed", "the new name",
        checks=(_a_spec, _identities),
        preconditions=(_images_readable, _spec_node, _names_free, _scheduled,
                       _spec_fits_its_node),
        refined_by=(Refinement(Capability.VM_CREATE_FROM_IMAGE, _with_images),
                    *IDENTITY_REFINEMENTS),
        reserve=_spec_size),
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
        "refused", "the VM", checks=(_whole_numbers,),
        preconditions=(_running_takes_the_change, _new_size_fits_its_node), reserve=_added,
        result="True if applied live, False if at the next start"),
    "delete": Rule(
        "vm.delete(disks=True)", Capability.VM_DELETE, DELETABLE, "allowed", "the VM",
        preconditions=(_no_linked_clone_broken,),
        refined_by=(Refinement(Capability.DELETE_KEEP_DISKS, _keeps_disks),),
        state_hint="stop it first (a forced power-off if need be)", result="None"),
    "mark_template": Rule(
        "vm.mark_template()", Capability.TEMPLATES, frozenset({S}), "refused", "the VM",
        state_hint="only a stopped VM can become a template", template_hint="nothing to do"),
    "convert_to_vm": Rule(
        "template.convert_to_vm(node=None)", Capability.TEMPLATE_TO_VM, ANY_STATE, "only",
        "the VM", preconditions=(_node_arg,)),
    "clone": Rule(
        "vm.clone(name, linked=False, count=None, concurrency=None, identity=None, placement)",
        Capability.FULL_CLONE,
        frozenset({S, R, P, SU, C}), "allowed", "the VM and the new names",
        checks=(_clone_names, _bulk_options, _identities, _a_placement),
        preconditions=(_placement_taken, _names_free, _clone_fits_its_node),
        refined_by=(Refinement(Capability.LINKED_CLONE, _linked_without_template_route),
                    Refinement(Capability.LINKED_CLONE, _linked_of_a_vm, after_reread=True),
                    Refinement(Capability.CLONE_RUNNING, _source_running, after_reread=True),
                    *IDENTITY_REFINEMENTS),
        capability_when=_full_clone, reserve=_clone_size,
        result="the new VM (a list with count=)"),
    "addresses": Rule(
        "vm.addresses()", Capability.GUEST_ADDRESSES, ANY_STATE, "allowed", "",
        result="the GuestAddress list"),
    "wait_ready": Rule(
        "vm.wait_ready(timeout=300)", Capability.GUEST_ADDRESSES, ANY_STATE, "allowed", "",
        result="the GuestAddress list"),
    "console": Rule(
        # held only while it attaches (the state is read under the hold); the console then
        # stays open while the user types and holds nothing. A paused VM's console attaches
        # and shows output again on resume
        "vm.console(timeout=30)", Capability.CONSOLE, frozenset({R, P}), "allowed", "the VM",
        state_hint="start it first", result="a Console"),
    "snapshot_create": Rule(
        "vm.snapshots.create(name, memory=False)", Capability.SNAPSHOTS, ANY_STATE - {U},
        "refused", "the VM", checks=(_snapshot_strings,), settle=_memory_only_when_running,
        preconditions=(_snapshot_name_free,),
        refined_by=(Refinement(Capability.MEMORY_SNAPSHOTS, _with_memory, after_reread=True),),
        result="the Snapshot"),
    "snapshot_revert": Rule(
        "snapshot.revert()", Capability.SNAPSHOTS, ANY_STATE, "refused", "the VM",
        preconditions=(_snapshot_exists,), reserve=_brought_back, result="the Snapshot"),
    "snapshot_delete": Rule(
        "snapshot.delete(children=False)", Capability.SNAPSHOTS, ANY_STATE, "allowed", "the VM",
        preconditions=(_snapshot_exists,), result="None"),
    "migrate": Rule(
        # not suspended: its saved memory image is local to the node; start it and migrate
        # live, or power it off and migrate cold
        "vm.migrate(to, live=None, placement)", Capability.COLD_MIGRATION,
        frozenset({S, R, C}), "allowed", "the VM (and its name on the target host)",
        checks=(_a_placement, _a_target_of_this_backend),
        preconditions=(_live_matches_state, _placement_taken, _moves_somewhere,
                       _leaves_no_linked_clone, _name_free_on_target, _scheduled,
                       _fits_the_target_node),
        refined_by=(Refinement(Capability.LIVE_MIGRATION, _live_asked),
                    Refinement(Capability.LIVE_MIGRATION, _live_chosen, after_reread=True),
                    Refinement(Capability.COLD_MIGRATION, _cold_chosen, after_reread=True),
                    Refinement(Capability.COLD_MIGRATION_SNAPSHOTS, _cold_with_snapshots,
                               after_reread=True),
                    Refinement(Capability.LIVE_MIGRATION_SNAPSHOTS, _live_with_snapshots,
                               after_reread=True)),
        capability_when=_cold_asked, settle=_live_by_default_when_running, reserve=_moved_size,
        state_hint="start it and migrate it live, or power it off first",
        result="a MigrationResult"),
    "export": Rule(
        "vm.backup(path), anyvirt.migrate(vm, to)", Capability.DISK_EXPORT,
        frozenset({S, SU, C}), "allowed", "the VM",
        preconditions=(_source_deletable,),
        refined_by=(Refinement(Capability.VM_DELETE, _deletes_source),),
        state_hint="stop it first (its disks must not change while they are copied)",
        result="the archive path / MigrationResult"),
    "export_running": Rule(
        # running, by design: held (one change at a time) but not stopped; the copy is
        # what a snapshot, taken and removed under the same hold, froze
        "anyvirt.migrate(vm, to, snapshot=True)", Capability.DISK_EXPORT, ANY_STATE, "allowed",
        "the VM", preconditions=(_no_snapshots_for_a_running_copy,),
        refined_by=(Refinement(Capability.SNAPSHOT_DISK_EXPORT, _copied_running),
                    Refinement(Capability.SNAPSHOTS, _copied_running)),
        result="a MigrationResult"),
    "backup_running": Rule(
        # running, by design: held (one change at a time) but not stopped; the platform's
        # backup job freezes the disks at one instant and reads only what changed
        "repo.backup(vm) of a running VM", Capability.DISK_EXPORT, ANY_STATE, "allowed",
        "the VM", refined_by=(Refinement(Capability.CHANGED_BLOCKS, _copied_running),),
        result="a RestorePoint"),
    "restore": Rule(
        "host.restore(path, name=None)", Capability.VM_CREATE, ANY_STATE, "allowed",
        "the new name (through create)", checks=(_new_names_valid,), preconditions=(_names_free,),
        refined_by=(Refinement(Capability.VM_CREATE_FROM_IMAGE, _restore_with_images),),
        reserve=_archived_size),
    "set_maintenance": Rule(
        "node.set_maintenance(on)", Capability.MAINTENANCE_MODE, ANY_STATE, "allowed", "",
        preconditions=(_node_empty,), result="the Node"),
    "evacuate": Rule(
        # each VM's move is its own migrate row (its hold, its checks); this row admits the
        # whole evacuation and makes it one Task
        "host.evacuate(node, to=None, maintenance=False)", None, ANY_STATE, "allowed", "",
        checks=(_moves_vms,),
        refined_by=(Refinement(Capability.MAINTENANCE_MODE, _ends_in_maintenance),),
        result="a MigrationResult per VM moved"),
    "recover": Rule(
        # holds the failed node's VMs once they are known (the plan's precondition)
        "host.recover(node, to=None, fenced=False)", Capability.NODE_RECOVERY, ANY_STATE,
        "allowed", "", checks=(_recovery_input,),
        preconditions=(_node_down, _recovery_targets, _recovery_plan),
        refined_by=(Refinement(Capability.NODE_RECOVERY_RESTART, _target_named),),
        result="a Recovery: one RecoveryResult per VM of the node"),
}


def refusals(rule: Rule) -> list[str]:
    """The errors a row raises before anything is sent, read off its fields and callables."""
    found: set[str] = set()
    if rule.capability is not None or rule.refined_by:
        found.add("NotSupported")
    if rule.holds:
        found.add("InvalidState")  # busy
    if "name" in rule.holds:
        found.add("AlreadyExists")  # a name being made
    if rule.reads_vm:
        found.add("NotFound")  # the VM is re-read
    if rule.states != ANY_STATE or rule.templates != "allowed" or rule.state_check is not None:
        found.add("InvalidState")
    for check in (*rule.checks, *rule.preconditions):
        found.update(error.__name__ for error in raised(check))
    if rule.reserve is not None:
        found.add("CapacityExceeded")
    order = ["NotSupported", "InvalidSpec", "InvalidState", "AlreadyExists", "NotFound",
             "CapacityExceeded"]
    return [name for name in order if name in found]


def row_sentences(rule: Rule) -> dict[str, Sequence[str]]:
    """A row's docs sentences, read off its callables."""
    return {
        "checks": [doc(c) for c in rule.checks],
        "preconditions": [doc(c) for c in rule.preconditions],
        "refinements": [f"{r.capability.value} when {doc(r.when)}" for r in rule.refined_by
                ],
        "reserve": [doc(rule.reserve)] if rule.reserve is not None else [],
    }


def operations_markdown(rules: dict[str, Rule] | None = None) -> str:
    """The table as Markdown, for the concepts page: every cell read off the rows and
    their callables."""
    rows = ["| operation | call | capability | allowed states | templates | held | capacity reserved |"
            " preconditions |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for op, rule in (rules or RULES).items():
        caps = f"`{rule.capability.value}`" if rule.capability else "-"
        if rule.capability is not None and rule.capability_when is not None:
            caps += f" (when {doc(rule.capability_when)})"
        refined = sorted({r.capability for r in rule.refined_by if r.capability != rule.capability},
                         key=lambda c: c.value)
        if refined:
            caps += " (+ " + ", ".join(f"`{c.value}`" for c in refined) + ")"
        states = "any" if rule.states == ANY_STATE else ", ".join(sorted(s.value for s in rule.states))
        sentences = row_sentences(rule)
        pre = [*sentences["checks"], *sentences["preconditions"]]
        reserved = "; ".join(sentences["reserve"]) or "-"
        rows.append(
            f"| {op} | `{rule.call}` | {caps} | {states} | {rule.templates} | {rule.holds or '-'} | "
            f"{reserved} | {'; '.join(pre) or '-'} |"
        )
    return "\n".join(rows)


__all__ = ["ALLOWED_FROM", "ANSWERING", "ANY_STATE", "DELETABLE", "RULES", "Case", "Demand", "Reads",
           "Refinement", "Rule", "check_power_state", "doc", "fits_node", "least_loaded", "node_id",
           "operations_markdown", "raised", "raises", "refusals", "row_sentences", "takes_vms"]
