"""``Host``: the connection users hold, and its ``vms`` and ``nodes`` collections."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from anyvirt import capacity, validation
from anyvirt.driver import find_one_vm
from anyvirt.errors import (
    AmbiguousName,
    ConnectionFailed,
    EvacuationIncomplete,
    InvalidSpec,
    NotFound,
    NotSupported,
)
from anyvirt.lookup import find_node
from anyvirt.model import Capability, HostInfo, MigrationResult, Overcommit, VMSpec, evolve
from anyvirt.node import Node
from anyvirt.operations import Gate
from anyvirt.tasks import DEFAULT_TIMEOUT, Job, ProgressCallback, Task
from anyvirt.vm import VM

if TYPE_CHECKING:
    from anyvirt.driver import Driver
    from anyvirt.extensions import Extension
    from anyvirt.model import RecoveredVM
    from anyvirt.recovery.result import Recovery
    from anyvirt.watch import Watch

T = TypeVar("T")
E = TypeVar("E", bound="Extension")


class Host:
    """One connection to a platform: a libvirt daemon, a vCenter, a Proxmox cluster, ...

    Use it as a context manager, or call ``close()``.
    """

    def __init__(self, driver: Driver, overcommit: Overcommit | None = None) -> None:
        self._driver = driver
        self.overcommit = overcommit or Overcommit()
        self.vms = VMCollection(self)
        self.nodes = NodeCollection(self)
        self.gate = Gate(self)
        self._closed = False
        self._lock = threading.Lock()

    # -- identity -----------------------------------------------------
    @property
    def backend(self) -> str:
        return self._driver.backend

    @property
    def uri(self) -> str:
        """The connection URI, without secrets."""
        return self._driver.safe_uri

    @property
    def driver(self) -> Driver:
        """The backend driver (SPI object); for backends' own extensions.

        Every handle reaches the platform through here, so a closed Host refuses
        them all alike instead of quietly logging in again.
        """
        if self._closed:
            raise ConnectionFailed(f"the connection to {self.uri} was closed")
        return self._driver

    @property
    def native(self) -> Any:
        """The SDK's own connection object (libvirt.virConnect, ServiceInstance, ...)."""
        return self.driver.native

    def __repr__(self) -> str:
        return f"<Host {self.backend} {self.uri}>"

    # -- capabilities -------------------------------------------------
    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.driver.capabilities()

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def why_not(self, capability: Capability) -> str:
        """Why this connection lacks ``capability`` ("" when it has it): the reason a
        ``NotSupported`` for it carries."""
        if capability in self.capabilities:
            return ""
        return self.driver.why_not(capability) or (
            f"the {self.backend} backend does not offer {capability.value}"
            if capability not in self.driver.possible_capabilities
            else f"this {self.backend} connection does not offer {capability.value}")

    def require(self, capability: Capability, detail: str = "") -> None:
        """Raise ``NotSupported`` unless this connection has ``capability``."""
        if capability not in self.capabilities:
            raise NotSupported(self.backend, capability, detail or self.why_not(capability))

    def extension(self, kind: type[E]) -> E:
        """The backend's own operations, typed: ``host.extension(VSphereExtensions)``.

        Each extension call still passes the operation gate (capability, one change at
        a time, deadline) and returns a Task with ``wait=False``. ``NotSupported`` when
        this connection's backend has no such extension.
        """
        if kind not in self.driver.extensions:
            raise InvalidSpec(f"{self.backend} connections have no {kind.__name__}")
        return kind(self)

    def _move_target(self) -> tuple[Host, str | None]:
        """Where ``vm.migrate(to=host)`` goes: this host, the node its platform picks."""
        return self, None

    # -- facts --------------------------------------------------------
    def info(self) -> HostInfo:
        """Identity, capacity, storage, and what the defined VMs have been given."""
        raw = self.driver.host_info()
        alloc = capacity.allocation(raw, self.driver.list_vms())
        return evolve(raw, allocation=alloc, overcommit=self.overcommit)

    def check_capacity(self, cpus: int, memory_mib: int) -> None:
        """Raise ``CapacityExceeded`` if this much more would pass the overcommit limit."""
        capacity.check(self.info(), cpus, memory_mib, self.overcommit)

    def reserve_capacity(self, cpus: int, memory_mib: int) -> capacity.Reservation:
        """Like ``check_capacity``, and hold that much until the returned reservation is
        released, so concurrent creates and clones cannot together pass the limit."""
        return capacity.reserve(self.uri, self.info, cpus, memory_mib, self.overcommit)

    # -- whole-host operations -----------------------------------------
    def restore(self, path: str | os.PathLike[str], name: str | None = None, *,
                networks: Mapping[str, str] | None = None,
                timeout: float | None = DEFAULT_TIMEOUT) -> VM:
        """Rebuild a VM from a ``vm.backup()`` archive made on any backend. A NIC keeps its
        network where this host has one of that name; ``networks`` maps the others
        (``{"lab": "default"}``, ``{"*": "default"}``), as for a move: an unmapped network
        is an ``InvalidSpec`` listing this host's networks, before anything is written."""
        from anyvirt.migration import restore

        return restore(self, path, name=name, networks=networks, timeout=timeout)

    @overload
    def evacuate(
        self, node: Node | str, to: Sequence[Node | Host] | None = ..., *, live: bool | None = ...,
        maintenance: bool = ..., wait: Literal[True] = ..., timeout: float | None = ...,
        on_progress: ProgressCallback | None = ...,
    ) -> list[MigrationResult]: ...

    @overload
    def evacuate(
        self, node: Node | str, to: Sequence[Node | Host] | None = ..., *, live: bool | None = ...,
        maintenance: bool = ..., wait: Literal[False], timeout: float | None = ...,
        on_progress: ProgressCallback | None = ...,
    ) -> Task[list[MigrationResult]]: ...

    def evacuate(
        self,
        node: Node | str,
        to: Sequence[Node | Host] | None = None,
        *,
        live: bool | None = None,
        maintenance: bool = False,
        wait: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        on_progress: ProgressCallback | None = None,
    ) -> list[MigrationResult] | Task[list[MigrationResult]]:
        """Move every VM off ``node`` (hardware failure, maintenance), round-robin over ``to``.

        ``to`` defaults to every other node of this host. A VM that fails to
        move is left where it was and the error is raised after the others
        have been tried, as ``EvacuationIncomplete`` (an ``ExceptionGroup`` that is also an
        ``AnyvirtError``; its ``results`` are the moves that succeeded). ``timeout``
        bounds each move; ``wait=False`` returns the whole evacuation as a ``Task``.
        """
        source = node if isinstance(node, Node) else None
        name = source.name if source is not None else str(node)

        def work(job: Job) -> list[MigrationResult]:
            return self._evacuate(source or self.nodes.get(str(node)), to, live, maintenance,
                                  timeout, on_progress)

        result: list[MigrationResult] | Task[list[MigrationResult]] = self.gate.evacuate(
            name, maintenance, work, wait=wait, timeout=None)
        return result

    @overload
    def recover(
        self, node: Node | str, to: Node | str | None = ..., *, fenced: bool = ...,
        wait: Literal[True] = ..., timeout: float | None = ...,
        on_progress: ProgressCallback | None = ...,
    ) -> Recovery: ...

    @overload
    def recover(
        self, node: Node | str, to: Node | str | None = ..., *, fenced: bool = ...,
        wait: Literal[False], timeout: float | None = ...,
        on_progress: ProgressCallback | None = ...,
    ) -> Task[Recovery]: ...

    def recover(
        self,
        node: Node | str,
        to: Node | str | None = None,
        *,
        fenced: bool = False,
        wait: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        on_progress: ProgressCallback | None = None,
    ) -> Recovery | Task[Recovery]:
        """Bring the VMs of ``node``, a node of this cluster that no longer answers, back
        on live nodes of its cluster (``to``: on that node), each from its disks where they
        are; what the platform's own HA restarts is reported as it says.

        Fencing comes before restart: a node that still answers is refused
        (``InvalidState``: ``evacuate`` moves its VMs), and so is one the platform cannot
        prove down, unless ``fenced=True`` states that it is fenced (powered off). VMs
        that ran come back running. The result has one ``RecoveryResult`` per VM of the
        node (recovered, or why not) and the whole recovery's ``elapsed`` seconds;
        ``wait=False`` returns a ``Task`` of it. See docs/recovery.md for each platform.
        """
        started = time.monotonic()
        node_ref = node.id if isinstance(node, Node) else node
        to_ref = to.id if isinstance(to, Node) else to

        def wrap(done: list[RecoveredVM]) -> Recovery:
            from anyvirt.recovery.result import RecoveredFrom, Recovery, RecoveryResult

            return Recovery([
                RecoveryResult(vm_name=r.vm_name, old_id=r.old_id,
                               outcome=RecoveredFrom(r.outcome),
                               vm=VM(self, r.summary) if r.summary is not None else None,
                               reason=r.reason, elapsed=r.elapsed)
                for r in done], elapsed=round(time.monotonic() - started, 3))

        result: Recovery | Task[Recovery] = self.gate.recover(
            node_ref, to_ref, fenced, wrap, wait=wait, timeout=timeout, on_progress=on_progress)
        return result

    def _evacuate(self, source: Node, to: Sequence[Node | Host] | None, live: bool | None,
                  maintenance: bool, timeout: float | None,
                  on_progress: ProgressCallback | None) -> list[MigrationResult]:
        targets: list[Node | Host] = list(to) if to else [
            n for n in self.nodes.list() if n.id != source.id
        ]
        if not targets:
            raise InvalidSpec(f"nowhere to evacuate node {source.name!r} to: give to=[...]")
        vms = [vm for vm in self.vms.list() if vm.node in (source.id, source.name)]
        results: list[MigrationResult] = []
        errors: list[Exception] = []
        for i, vm in enumerate(vms):
            try:
                results.append(
                    vm.migrate(to=targets[i % len(targets)], live=live, timeout=timeout,
                               on_progress=on_progress)
                )
            except Exception as exc:  # keep going: evacuation moves what it can
                errors.append(exc)
        if errors:
            failed = EvacuationIncomplete(
                f"{len(errors)} of {len(vms)} VMs could not be moved off {source.name!r}", errors)
            failed.results = list(results)
            raise failed
        if maintenance:
            source.set_maintenance(True, timeout=timeout)
        return results

    # -- lifetime -----------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._driver.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class VMCollection:
    """``host.vms``: list, get and create VMs."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def list(self) -> list[VM]:
        """Every VM, with id, name, state, CPUs, memory and node from one listing."""
        host = self._host
        return [VM(host, s) for s in host.driver.list_vms()]

    def __iter__(self) -> Iterator[VM]:
        return iter(self.list())

    def get(self, ref: str) -> VM:
        """A VM by id, else by name; ``NotFound`` if absent, ``AmbiguousName`` (a
        ``NotFound``) if more than one VM has that name: then give the id."""
        validation.LOOKUP.check(ref)  # NUL or a lone surrogate names nothing on any platform
        return VM(self._host, find_one_vm(self._host.driver, ref))

    def watch(self, *, initial: bool = False, interval: float | None = None,
              buffer: int | None = None) -> Watch:
        """A stream of changes to this host's VMs: an iterator of ``VMChange`` (``kind``
        "added", "removed" or "changed", ``vm``, ``old``, ``new``), and a context
        manager that closes it.

        ``initial=True`` first gives every VM there now as "added"; else only what
        changes after this call returns. ``interval`` is the seconds between polls
        where the platform pushes nothing (Proxmox, VirtualBox). Past ``buffer``
        waiting changes, further changes to a VM are merged into its waiting one.
        A lost connection is re-opened and relisted, and only the differences are
        given. See :mod:`anyvirt.watch`.
        """
        from anyvirt.watch import DEFAULT_BUFFER, Watch

        return Watch(self._host, initial=initial, interval=interval,
                     buffer=DEFAULT_BUFFER if buffer is None else buffer)

    def exists(self, ref: str) -> bool:
        """Whether a VM has that id or name (two of one name: it exists)."""
        try:
            self.get(ref)
        except AmbiguousName:
            return True
        except NotFound:
            return False
        return True

    def __contains__(self, ref: object) -> bool:
        return isinstance(ref, str) and self.exists(ref)

    @overload
    def create(
        self, spec: VMSpec, *, wait: Literal[True] = ..., timeout: float | None = ...,
        on_progress: ProgressCallback | None = ...,
    ) -> VM: ...

    @overload
    def create(
        self, spec: VMSpec, *, wait: Literal[False], timeout: float | None = ...,
        on_progress: ProgressCallback | None = ...,
    ) -> Task[VM]: ...

    def create(
        self,
        spec: VMSpec,
        *,
        wait: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        on_progress: ProgressCallback | None = None,
    ) -> VM | Task[VM]:
        """Create (define) a VM from ``spec``; it is left stopped.

        Everything checkable is checked first, before anything is sent: the spec
        (``InvalidSpec``), the name free (``AlreadyExists``), image files readable
        and without backing files, the node known and taking VMs, capacity within
        the overcommit limit (``CapacityExceeded``). A create that fails, or ends
        after its ``timeout``, leaves no VM behind.
        """
        host = self._host
        return host.gate.create(spec, lambda summary: VM(host, summary), wait=wait,
                                timeout=timeout, on_progress=on_progress)


class NodeCollection:
    """``host.nodes``: the hypervisors behind this connection."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def list(self) -> list[Node]:
        return [Node(self._host, info) for info in self._host.driver.list_nodes()]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.list())

    def get(self, ref: str) -> Node:
        """A node by id, else by name; ``NotFound`` if absent."""
        return Node(self._host, find_node(self._host.driver.list_nodes(), ref, self._host.uri))
