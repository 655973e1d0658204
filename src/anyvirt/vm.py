"""``VM``: the handle users hold for one virtual machine.

It caches what the last listing said (``state``, ``cpus``, ...) and re-reads
after every operation, so ``vm.state`` after ``vm.start()`` is RUNNING
without the caller asking. Every long operation takes ``wait``/``timeout``;
``wait=False`` returns a :class:`~anyvirt.tasks.Task`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from anyvirt.addresses import GuestAddress
from anyvirt.console import Console
from anyvirt.deployment.identity import Identity
from anyvirt.errors import InvalidSpec, NotFound
from anyvirt.model import (
    MigrationResult,
    Placement,
    PowerAction,
    PowerState,
    VMInfo,
    VMSummary,
    evolve,
)
from anyvirt.node import Node
from anyvirt.snapshot import SnapshotCollection
from anyvirt.tasks import DEFAULT_TIMEOUT, Job, ProgressCallback, Task

if TYPE_CHECKING:
    from anyvirt.host import Host

T = TypeVar("T")
DEFAULT_STOP_TIMEOUT = 60.0


class VM:
    def __init__(self, host: Host, summary: VMSummary) -> None:
        self._host = host
        self._summary = summary

    @functools.cached_property
    def snapshots(self) -> SnapshotCollection:
        """``vm.snapshots``: made on first use, so a listing of thousands of VMs builds no
        collection and no VM <-> collection reference cycle for the garbage collector."""
        return SnapshotCollection(self)

    # -- what the listing said ------------------------------------------
    @property
    def host(self) -> Host:
        return self._host

    @property
    def id(self) -> str:
        return self._summary.id

    @property
    def name(self) -> str:
        return self._summary.name

    @property
    def state(self) -> PowerState:
        return self._summary.state

    @property
    def raw_state(self) -> str:
        return self._summary.raw_state

    @property
    def cpus(self) -> int:
        return self._summary.cpus

    @property
    def memory_mib(self) -> int:
        return self._summary.memory_mib

    @property
    def node(self) -> str | None:
        return self._summary.node

    @property
    def template(self) -> bool:
        return self._summary.template

    @property
    def summary(self) -> VMSummary:
        return self._summary

    @property
    def native(self) -> Any:
        """The SDK's own object for this VM (virDomain, vim.VirtualMachine, ...)."""
        return self._host.driver.native_vm(self.id)

    def __repr__(self) -> str:
        return f"<VM {self.name!r} {self.state} on {self._host.backend}>"

    # Equality is by backend and stable id, not by connection: the handle of a VM read
    # before a migration equals the one read on its new host afterwards.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, VM) and other._host.backend == self._host.backend \
            and other.id == self.id

    def __hash__(self) -> int:
        return hash((self._host.backend, self.id))

    # -- reading --------------------------------------------------------
    def refresh(self) -> VM:
        """Re-read state, CPUs, memory and node."""
        self._summary = self._host.driver.vm_summary(self.id)
        return self

    def wait_for(self, state: PowerState | str, timeout: float = DEFAULT_TIMEOUT, *,
                 interval: float | None = None) -> VM:
        """Block until this VM is in ``state`` (however it got there: anyvirt or
        another tool), and return it with its summary updated.

        Built on ``host.vms.watch()``: where the platform pushes changes nothing is
        sent while waiting; elsewhere the watch lists every ``interval`` seconds.
        ``Timeout`` if ``timeout`` seconds pass first, ``NotFound`` if the VM is removed.
        """
        from anyvirt.watch.waits import wait_for_state

        wanted = state if isinstance(state, PowerState) else PowerState(state)
        self._summary = wait_for_state(self, wanted, timeout, interval=interval)
        return self

    def info(self) -> VMInfo:
        """The full description: disks with their paths, NICs with MACs, firmware, raw state."""
        return self._host.driver.vm_info(self.id)

    # -- lifecycle ------------------------------------------------------
    # Each verb is one call into the gate (``host.gate``), which checks the capability,
    # holds the VM, re-reads its state and applies the table before the driver runs.
    # ``wait=True`` returns the result; ``wait=False`` a Task of it (the overloads say so).

    def _adopt(self, summary: VMSummary) -> VM:
        """This handle, with what the gate read back."""
        self._summary = summary
        return self

    def _after_power(self, summary: VMSummary | None) -> VM:
        if summary is None:  # a transient VM (libvirt's virsh create) is gone once it is off
            self._summary = evolve(self._summary, state=PowerState.STOPPED,
                                   raw_state="gone (transient)")
            return self
        return self._adopt(summary)

    def _refreshed(self, value: T) -> T:
        self.refresh()
        return value

    def _power(self, action: PowerAction, wait: bool, timeout: float | None,
               on_progress: ProgressCallback | None) -> VM | Task[VM]:
        return self._host.gate.power(self.id, self.name, action, self._after_power, wait=wait,
                                     timeout=timeout, on_progress=on_progress)

    @overload
    def start(self, *, wait: Literal[True] = ..., timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> VM: ...
    @overload
    def start(self, *, wait: Literal[False], timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> Task[VM]: ...
    def start(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
              on_progress: ProgressCallback | None = None) -> VM | Task[VM]:
        """Power on (or resume from suspended).

        Raises ``InvalidState`` unless the VM is stopped, suspended or crashed (a
        template never starts), ``NotSupported`` without ``Capability.START``.
        """
        return self._power(PowerAction.START, wait, timeout, on_progress)

    @overload
    def stop(self, force: bool = ..., timeout: float | None = ..., *, wait: Literal[True] = ...,
             on_progress: ProgressCallback | None = ...) -> VM: ...
    @overload
    def stop(self, force: bool = ..., timeout: float | None = ..., *, wait: Literal[False],
             on_progress: ProgressCallback | None = ...) -> Task[VM]: ...
    def stop(self, force: bool = False, timeout: float | None = DEFAULT_STOP_TIMEOUT, *,
             wait: bool = True, on_progress: ProgressCallback | None = None) -> VM | Task[VM]:
        """Shut down: an ACPI/guest shutdown, waiting up to ``timeout`` for the guest to
        power off; ``force=True`` powers off at once (also from paused or suspended)."""
        action = PowerAction.POWER_OFF if force else PowerAction.STOP
        return self._power(action, wait, timeout, on_progress)

    @overload
    def reboot(self, *, wait: Literal[True] = ..., timeout: float | None = ...,
               on_progress: ProgressCallback | None = ...) -> VM: ...
    @overload
    def reboot(self, *, wait: Literal[False], timeout: float | None = ...,
               on_progress: ProgressCallback | None = ...) -> Task[VM]: ...
    def reboot(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
               on_progress: ProgressCallback | None = None) -> VM | Task[VM]:
        """Ask the guest to restart (a running VM only)."""
        return self._power(PowerAction.REBOOT, wait, timeout, on_progress)

    @overload
    def reset(self, *, wait: Literal[True] = ..., timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> VM: ...
    @overload
    def reset(self, *, wait: Literal[False], timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> Task[VM]: ...
    def reset(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
              on_progress: ProgressCallback | None = None) -> VM | Task[VM]:
        """Hard reset, like the reset button (a running VM only)."""
        return self._power(PowerAction.RESET, wait, timeout, on_progress)

    @overload
    def pause(self, *, wait: Literal[True] = ..., timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> VM: ...
    @overload
    def pause(self, *, wait: Literal[False], timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> Task[VM]: ...
    def pause(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
              on_progress: ProgressCallback | None = None) -> VM | Task[VM]:
        """Freeze the CPUs, keeping memory in place (a running VM only)."""
        return self._power(PowerAction.PAUSE, wait, timeout, on_progress)

    @overload
    def resume(self, *, wait: Literal[True] = ..., timeout: float | None = ...,
               on_progress: ProgressCallback | None = ...) -> VM: ...
    @overload
    def resume(self, *, wait: Literal[False], timeout: float | None = ...,
               on_progress: ProgressCallback | None = ...) -> Task[VM]: ...
    def resume(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
               on_progress: ProgressCallback | None = None) -> VM | Task[VM]:
        """Continue a paused VM; a suspended one is started (its saved state restored)."""
        return self._power(PowerAction.RESUME, wait, timeout, on_progress)

    @overload
    def suspend(self, *, wait: Literal[True] = ..., timeout: float | None = ...,
                on_progress: ProgressCallback | None = ...) -> VM: ...
    @overload
    def suspend(self, *, wait: Literal[False], timeout: float | None = ...,
                on_progress: ProgressCallback | None = ...) -> Task[VM]: ...
    def suspend(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
                on_progress: ProgressCallback | None = None) -> VM | Task[VM]:
        """Save memory to disk and stop; ``start()`` or ``resume()`` continues it."""
        return self._power(PowerAction.SUSPEND, wait, timeout, on_progress)

    def wait_for_state(self, state: PowerState, timeout: float = DEFAULT_TIMEOUT,
                       interval: float = 0.5) -> VM:
        """Poll until the VM reaches ``state`` (e.g. after a guest-initiated shutdown);
        ``Timeout`` after ``timeout`` seconds."""
        job = Job(f"wait for {self.name} {state}", timeout)
        job.wait_for(lambda: self.refresh().state is state, f"VM {self.name!r} to be {state}",
                     interval=interval)
        return self

    # -- configuration --------------------------------------------------
    @overload
    def reconfigure(self, cpus: int | None = ..., memory_mib: int | None = ..., *,
                    wait: Literal[True] = ..., timeout: float | None = ...) -> bool: ...
    @overload
    def reconfigure(self, cpus: int | None = ..., memory_mib: int | None = ..., *,
                    wait: Literal[False], timeout: float | None = ...) -> Task[bool]: ...
    def reconfigure(self, cpus: int | None = None, memory_mib: int | None = None, *,
                    wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> bool | Task[bool]:
        """Change CPUs and/or memory. Returns True if applied live, False if only to the
        persistent config (it takes effect at the next start).

        ``InvalidSpec`` for values that are not whole numbers >= 1; ``CapacityExceeded``
        when the increase would pass the host's overcommit limit.
        """
        return self._host.gate.reconfigure(self.id, self.name, cpus, memory_mib, self._refreshed,
                                           wait=wait, timeout=timeout)

    @overload
    def delete(self, disks: bool = ..., *, wait: Literal[True] = ...,
               timeout: float | None = ...) -> None: ...
    @overload
    def delete(self, disks: bool = ..., *, wait: Literal[False],
               timeout: float | None = ...) -> Task[None]: ...
    def delete(self, disks: bool = True, *, wait: bool = True,
               timeout: float | None = DEFAULT_TIMEOUT) -> Task[None] | None:
        """Remove the VM (and, with ``disks=True``, its disks and snapshots). It must not be
        running or paused. With ``disks=True``, ``InvalidState`` while linked clones use its
        disks: a clone is never left broken."""
        return self._host.gate.delete(self.id, self.name, disks, wait=wait, timeout=timeout)

    @overload
    def mark_template(self, *, wait: Literal[True] = ..., timeout: float | None = ...) -> VM: ...
    @overload
    def mark_template(self, *, wait: Literal[False], timeout: float | None = ...) -> Task[VM]: ...
    def mark_template(self, *, wait: bool = True,
                      timeout: float | None = DEFAULT_TIMEOUT) -> VM | Task[VM]:
        """Make this stopped VM a template: it can no longer start or change; ``clone()``
        deploys copies of it (linked clones share its disks)."""
        return self._host.gate.mark_template(self.id, self.name, self._adopt, wait=wait,
                                             timeout=timeout)

    @overload
    def convert_to_vm(self, node: Node | str | None = ..., *, wait: Literal[True] = ...,
                      timeout: float | None = ...) -> VM: ...
    @overload
    def convert_to_vm(self, node: Node | str | None = ..., *, wait: Literal[False],
                      timeout: float | None = ...) -> Task[VM]: ...
    def convert_to_vm(self, node: Node | str | None = None, *, wait: bool = True,
                      timeout: float | None = DEFAULT_TIMEOUT) -> VM | Task[VM]:
        """Turn this template back into an ordinary VM (on ``node`` where the platform
        places it); its linked clones keep working."""
        return self._host.gate.convert_to_vm(self.id, self.name, _node_ref(node), self._adopt,
                                             wait=wait, timeout=timeout)

    # -- copies and moves -------------------------------------------------
    def backup(self, path: str | os.PathLike[str], *, shutdown: bool = False,
               snapshot: bool = False, timeout: float | None = DEFAULT_TIMEOUT) -> Path:
        """Write this VM, configuration and disks, to a portable archive that
        ``host.restore`` rebuilds on any backend. A running VM is refused unless
        ``shutdown=True`` (stopped gracefully first) or ``snapshot=True`` (copied as a
        snapshot froze it, crash-consistent; it runs on)."""
        from anyvirt.migration import backup

        return backup(self, Path(path), shutdown=shutdown, snapshot=snapshot, timeout=timeout)

    @overload
    def clone(self, name: str, linked: bool = ..., *, count: None = ...,
              concurrency: int | None = ..., identity: Identity | None = ...,
              node: Node | str | None = ..., storage: str | None = ..., folder: str | None = ...,
              pool: str | None = ..., wait: Literal[True] = ..., timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> VM: ...
    @overload
    def clone(self, name: str, linked: bool = ..., *, count: int,
              concurrency: int | None = ..., identity: Identity | None = ...,
              node: Node | str | None = ..., storage: str | None = ..., folder: str | None = ...,
              pool: str | None = ..., wait: Literal[True] = ..., timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> list[VM]: ...
    @overload
    def clone(self, name: str, linked: bool = ..., *, count: None = ...,
              concurrency: int | None = ..., identity: Identity | None = ...,
              node: Node | str | None = ..., storage: str | None = ..., folder: str | None = ...,
              pool: str | None = ..., wait: Literal[False], timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> Task[VM]: ...
    @overload
    def clone(self, name: str, linked: bool = ..., *, count: int,
              concurrency: int | None = ..., identity: Identity | None = ...,
              node: Node | str | None = ..., storage: str | None = ..., folder: str | None = ...,
              pool: str | None = ..., wait: Literal[False], timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> Task[list[VM]]: ...
    def clone(self, name: str, linked: bool = False, *, count: int | None = None,
              concurrency: int | None = None, identity: Identity | None = None,
              node: Node | str | None = None, storage: str | None = None,
              folder: str | None = None, pool: str | None = None, wait: bool = True,
              timeout: float | None = DEFAULT_TIMEOUT,
              on_progress: ProgressCallback | None = None) -> Any:
        """Copy this VM as ``name`` (a new id and new MACs), stopped.

        ``linked=True`` shares the original's disks copy-on-write. A running VM is
        copied crash-consistently, as at one instant (``Capability.CLONE_RUNNING``);
        a VM with snapshots gives a clone of its current state, without snapshots.
        With ``count=N``, makes N clones named ``name-1`` .. ``name-N`` and returns
        them as a list (all or none), ``concurrency`` at a time (one by default;
        capacity for all N is reserved before the first copy). ``identity``
        (``Capability.IDENTITY``) gives each clone its own host name (its name) and
        instance id, applied before anything starts it; a clone's identity replaces
        the one it inherited, never the original's. ``node``, ``storage`` (pool, datastore),
        ``folder`` and ``pool`` (resource pool) place the copies where the backend
        takes them (``InvalidSpec`` for an option it does not).
        """
        placement = Placement(node=_node_ref(node), storage=storage, folder=folder, pool=pool)
        host = self._host

        def handles(made: list[VMSummary]) -> VM | list[VM]:
            clones = [VM(host, summary) for summary in made]
            return clones if count is not None else clones[0]

        return host.gate.clone(self.id, self.name, name, bool(linked), count, placement,
                               handles, wait=wait, timeout=timeout, on_progress=on_progress,
                               concurrency=concurrency, identity=identity)

    def addresses(self) -> list[GuestAddress]:
        """The guest's reachable addresses on this VM's own NICs, as the platform reports
        them now (``Capability.GUEST_ADDRESSES``): loopback, link-local and APIPA
        addresses, and those of NICs that are not the VM's (a container bridge inside
        the guest), are left out. ``[]`` when none is known yet."""
        return self._host.gate.addresses(self.id, self.name)

    def console(self, timeout: float = 30) -> Console:
        """Attach to this running VM's serial console (``Capability.CONSOLE``): read what
        the guest writes, type to it, ``expect`` a prompt. Use it as a context manager so
        it is detached; the VM keeps running. ``timeout`` bounds the attach."""
        return self._host.gate.console(self.id, self.name, timeout)

    def wait_ready(self, timeout: float = 300) -> list[GuestAddress]:
        """Wait until the VM runs, has a reachable address, and (where the platform can
        tell) its guest says it is up; its addresses. ``Timeout`` names the stage it
        reached: "not running", "running, no address yet" or "address, guest not up"."""
        return self._host.gate.wait_ready(self.id, self.name, timeout)  # type: ignore[no-any-return]

    @overload
    def migrate(self, to: Node | Host, live: bool | None = ..., *, storage: str | None = ...,
                wait: Literal[True] = ..., timeout: float | None = ...,
                on_progress: ProgressCallback | None = ...) -> MigrationResult: ...
    @overload
    def migrate(self, to: Node | Host, live: bool | None = ..., *, storage: str | None = ...,
                wait: Literal[False], timeout: float | None = ...,
                on_progress: ProgressCallback | None = ...) -> Task[MigrationResult]: ...
    def migrate(self, to: Node | Host, live: bool | None = None, *, storage: str | None = None,
                wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
                on_progress: ProgressCallback | None = None) -> MigrationResult | Task[MigrationResult]:
        """Move this VM to another node of the same host, or to another host of the same
        backend; ``storage`` moves its disks too (storage vMotion, a target pool).
        ``live`` defaults to True for a running VM. Snapshots travel with it where the
        connection declares ``COLD_MIGRATION_SNAPSHOTS`` / ``LIVE_MIGRATION_SNAPSHOTS``,
        else ``NotSupported`` before anything moves. Across platforms, use
        ``anyvirt.migrate``."""
        where = getattr(to, "_move_target", None)
        if where is None:
            raise InvalidSpec(f"migrate(to=...) takes a Node or a Host, not {type(to).__name__}")
        target, node = where()

        def arrived(result: MigrationResult) -> MigrationResult:
            self._host = target  # the handle follows the VM; a backend may re-id it on arrival
            with contextlib.suppress(NotFound):
                self._summary = target.driver.vm_summary(result.vm_id)
            return result

        return self._host.gate.migrate(self.id, self.name, target, node, live,
                                       Placement(storage=storage), arrived, wait=wait,
                                       timeout=timeout, on_progress=on_progress)


def _node_ref(node: Node | str | None) -> str | None:
    if isinstance(node, Node):
        return node.id
    if node is not None and not isinstance(node, str):
        raise InvalidSpec(f"node must be a Node or a node name, not {type(node).__name__}")
    return node
