"""``VM``: the handle users hold for one virtual machine.

It caches what the last listing said (``state``, ``cpus``, ...) and re-reads
after every operation, so ``vm.state`` after ``vm.start()`` is RUNNING
without the caller asking. Every long operation takes ``wait``/``timeout``;
``wait=False`` returns a :class:`~anyvirt.tasks.Task`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from anyvirt.errors import InvalidSpec
from anyvirt.model import (
    MigrationResult,
    Placement,
    PowerAction,
    PowerState,
    VMInfo,
    VMSummary,
)
from anyvirt.snapshot import SnapshotCollection
from anyvirt.tasks import DEFAULT_TIMEOUT, Job, ProgressCallback, Task

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.node import Node

DEFAULT_STOP_TIMEOUT = 60.0


class VM:
    def __init__(self, host: Host, summary: VMSummary) -> None:
        self._host = host
        self._summary = summary
        self.snapshots = SnapshotCollection(self)

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

    def _power(self, action: PowerAction, wait: bool, timeout: float | None,
               on_progress: ProgressCallback | None) -> VM | Task[VM]:
        result: VM | Task[VM] = self._host.gate.power(self, action, wait=wait, timeout=timeout,
                                                     on_progress=on_progress)
        return result

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
        result: bool | Task[bool] = self._host.gate.reconfigure(self, cpus, memory_mib, wait=wait,
                                                               timeout=timeout)
        return result

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
        result: Task[None] | None = self._host.gate.delete(self, disks, wait=wait, timeout=timeout)
        return result

    @overload
    def mark_template(self, *, wait: Literal[True] = ..., timeout: float | None = ...) -> VM: ...
    @overload
    def mark_template(self, *, wait: Literal[False], timeout: float | None = ...) -> Task[VM]: ...
    def mark_template(self, *, wait: bool = True,
                      timeout: float | None = DEFAULT_TIMEOUT) -> VM | Task[VM]:
        """Make this stopped VM a template: it can no longer start or change; ``clone()``
        deploys copies of it (linked clones share its disks)."""
        result: VM | Task[VM] = self._host.gate.mark_template(self, wait=wait, timeout=timeout)
        return result

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
        result: VM | Task[VM] = self._host.gate.convert_to_vm(
            self, _node_ref(node), wait=wait, timeout=timeout)
        return result

    # -- copies and moves -------------------------------------------------
    def backup(self, path: str | os.PathLike[str], *,
               timeout: float | None = DEFAULT_TIMEOUT) -> Path:
        """Write this stopped VM, configuration and disks, to a portable archive that
        ``host.restore`` rebuilds on any backend."""
        from anyvirt.migration import backup

        return backup(self, Path(path), timeout=timeout)

    @overload
    def clone(self, name: str, linked: bool = ..., *, count: None = ...,
              node: Node | str | None = ..., storage: str | None = ..., folder: str | None = ...,
              pool: str | None = ..., wait: Literal[True] = ..., timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> VM: ...
    @overload
    def clone(self, name: str, linked: bool = ..., *, count: int,
              node: Node | str | None = ..., storage: str | None = ..., folder: str | None = ...,
              pool: str | None = ..., wait: Literal[True] = ..., timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> list[VM]: ...
    @overload
    def clone(self, name: str, linked: bool = ..., *, count: None = ...,
              node: Node | str | None = ..., storage: str | None = ..., folder: str | None = ...,
              pool: str | None = ..., wait: Literal[False], timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> Task[VM]: ...
    @overload
    def clone(self, name: str, linked: bool = ..., *, count: int,
              node: Node | str | None = ..., storage: str | None = ..., folder: str | None = ...,
              pool: str | None = ..., wait: Literal[False], timeout: float | None = ...,
              on_progress: ProgressCallback | None = ...) -> Task[list[VM]]: ...
    def clone(self, name: str, linked: bool = False, *, count: int | None = None,
              node: Node | str | None = None, storage: str | None = None,
              folder: str | None = None, pool: str | None = None, wait: bool = True,
              timeout: float | None = DEFAULT_TIMEOUT,
              on_progress: ProgressCallback | None = None) -> Any:
        """Copy this VM as ``name`` (a new id and new MACs), stopped.

        ``linked=True`` shares the original's disks copy-on-write. A running VM is
        copied crash-consistently, as at one instant (``Capability.CLONE_RUNNING``);
        a VM with snapshots gives a clone of its current state, without snapshots.
        With ``count=N``, makes N clones named ``name-1`` .. ``name-N`` and returns
        them as a list (all or none). ``node``, ``storage`` (pool, datastore),
        ``folder`` and ``pool`` (resource pool) place the copies where the backend
        takes them (``InvalidSpec`` for an option it does not).
        """
        placement = Placement(node=_node_ref(node), storage=storage, folder=folder, pool=pool)
        return self._host.gate.clone(self, name, bool(linked), count, placement, wait=wait,
                                     timeout=timeout, on_progress=on_progress)

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
        result: MigrationResult | Task[MigrationResult] = self._host.gate.migrate(
            self, to, live, Placement(storage=storage), wait=wait, timeout=timeout,
            on_progress=on_progress)
        return result


def _node_ref(node: Node | str | None) -> str | None:
    from anyvirt.node import Node

    if isinstance(node, Node):
        return node.id
    if node is not None and not isinstance(node, str):
        raise InvalidSpec(f"node must be a Node or a node name, not {type(node).__name__}")
    return node
