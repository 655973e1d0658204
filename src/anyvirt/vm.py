"""``VM``: the handle users hold for one virtual machine.

It caches what the last listing said (``state``, ``cpus``, ...) and re-reads
after every operation, so ``vm.state`` after ``vm.start()`` is RUNNING
without the caller asking. Every long operation takes ``wait``/``timeout``;
``wait=False`` returns a :class:`~anyvirt.tasks.Task`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anyvirt import states
from anyvirt.errors import AlreadyExists, InvalidSpec, InvalidState, NotFound
from anyvirt.model import (
    ACTION_CAPABILITY,
    Capability,
    MigrationResult,
    PowerAction,
    PowerState,
    VMInfo,
    VMSummary,
    check_name,
    evolve,
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

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VM) and other._host is self._host and other.id == self.id

    def __hash__(self) -> int:
        return hash((id(self._host), self.id))

    # -- reading --------------------------------------------------------
    def refresh(self) -> VM:
        """Re-read state, CPUs, memory and node."""
        self._summary = self._host.driver.vm_summary(self.id)
        return self

    def info(self) -> VMInfo:
        """The full description: disks with their paths, NICs with MACs, firmware, raw state."""
        return self._host.driver.vm_info(self.id)

    # -- lifecycle ------------------------------------------------------
    def _power(
        self,
        action: PowerAction,
        *,
        wait: bool,
        timeout: float | None,
        on_progress: ProgressCallback | None,
    ) -> VM | Task[VM]:
        self._host.require(ACTION_CAPABILITY[action])
        self.refresh()
        if self.template:
            raise InvalidState(f"{self.name!r} is a template: clone() it to get a VM that runs")
        states.check(action, self.state, self.name)

        def work(job: Job) -> VM:
            self._host.driver.power(self.id, action, job)
            return self.refresh()

        return self._host.run(f"{action.value} {self.name}", work, wait=wait, timeout=timeout,
                   on_progress=on_progress)

    def start(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
              on_progress: ProgressCallback | None = None) -> Any:
        """Power on (or resume from suspended). Returns the VM, or a Task with ``wait=False``."""
        return self._power(PowerAction.START, wait=wait, timeout=timeout, on_progress=on_progress)

    def stop(self, force: bool = False, timeout: float | None = DEFAULT_STOP_TIMEOUT, *,
             wait: bool = True, on_progress: ProgressCallback | None = None) -> Any:
        """Shut down: ACPI/guest shutdown, waiting up to ``timeout``; ``force=True`` powers off."""
        action = PowerAction.POWER_OFF if force else PowerAction.STOP
        return self._power(action, wait=wait, timeout=timeout, on_progress=on_progress)

    def reboot(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
               on_progress: ProgressCallback | None = None) -> Any:
        """Ask the guest to restart."""
        return self._power(PowerAction.REBOOT, wait=wait, timeout=timeout, on_progress=on_progress)

    def reset(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
              on_progress: ProgressCallback | None = None) -> Any:
        """Hard reset, like the reset button."""
        return self._power(PowerAction.RESET, wait=wait, timeout=timeout, on_progress=on_progress)

    def pause(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
              on_progress: ProgressCallback | None = None) -> Any:
        """Freeze the CPUs, keeping memory in place."""
        return self._power(PowerAction.PAUSE, wait=wait, timeout=timeout, on_progress=on_progress)

    def resume(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
               on_progress: ProgressCallback | None = None) -> Any:
        """Continue a paused VM; a suspended one is started (its saved state restored)."""
        self.refresh()
        if self.state is PowerState.SUSPENDED:
            return self._power(PowerAction.START, wait=wait, timeout=timeout,
                               on_progress=on_progress)
        return self._power(PowerAction.RESUME, wait=wait, timeout=timeout, on_progress=on_progress)

    def suspend(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
                on_progress: ProgressCallback | None = None) -> Any:
        """Save memory to disk and stop; ``start()`` or ``resume()`` continues it."""
        return self._power(PowerAction.SUSPEND, wait=wait, timeout=timeout,
                           on_progress=on_progress)

    def wait_for_state(self, state: PowerState, timeout: float = DEFAULT_TIMEOUT,
                       interval: float = 0.5) -> VM:
        """Poll until the VM reaches ``state`` (e.g. after a guest-initiated shutdown)."""
        job = Job(f"wait for {self.name} {state}", timeout)
        job.wait_for(lambda: self.refresh().state is state, f"VM {self.name!r} to be {state}",
                     interval=interval)
        return self

    # -- configuration --------------------------------------------------
    def reconfigure(self, cpus: int | None = None, memory_mib: int | None = None, *,
                    wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """Change CPUs and/or memory. Returns True if applied live, False if only to the
        persistent config (it takes effect at the next start)."""
        for name, value in (("cpus", cpus), ("memory_mib", memory_mib)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidSpec(f"{name} must be a whole number of at least 1, not {value!r}")
        if cpus is None and memory_mib is None:
            raise InvalidSpec("reconfigure() needs cpus or memory_mib")
        self._host.require(Capability.RECONFIGURE)
        self.refresh()
        add_cpus = (cpus - self.cpus) if cpus is not None else 0
        add_mem = (memory_mib - self.memory_mib) if memory_mib is not None else 0
        reservation = self._host.reserve_capacity(add_cpus, add_mem)

        def work(job: Job) -> bool:
            try:
                live = self._host.driver.reconfigure_vm(self.id, cpus, memory_mib, job)
            finally:
                reservation.release()
            self.refresh()
            return live

        return self._host.run(f"reconfigure {self.name}", work, wait=wait, timeout=timeout)

    def delete(self, disks: bool = True, *, wait: bool = True,
               timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """Remove the VM (and, with ``disks=True``, its disks and snapshots). It must be stopped."""
        self._host.require(Capability.VM_DELETE)
        self.refresh()
        states.check_deletable(self.state, self.name)

        def work(job: Job) -> None:
            self._host.driver.delete_vm(self.id, disks, job)

        return self._host.run(f"delete {self.name}", work, wait=wait, timeout=timeout)

    def mark_template(self, *, wait: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """Make this stopped VM a template: it can no longer start; ``clone()`` deploys it."""
        self._host.require(Capability.TEMPLATES)
        self.refresh()
        if self.template:
            raise InvalidState(f"VM {self.name!r} is a template already")
        if self.state is not PowerState.STOPPED:
            raise InvalidState(f"only a stopped VM can become a template; {self.name!r} is {self.state}")

        def work(job: Job) -> VM:
            self._summary = self._host.driver.mark_template(self.id, job)
            return self

        return self._host.run(f"mark {self.name} as template", work, wait=wait, timeout=timeout)

    # -- copies and moves -------------------------------------------------
    def backup(self, path: str | os.PathLike[str], *,
               timeout: float | None = DEFAULT_TIMEOUT) -> Path:
        """Write this stopped VM, configuration and disks, to a portable archive that
        ``host.restore`` rebuilds on any backend."""
        from anyvirt.migration import backup

        return backup(self, Path(path), timeout=timeout)

    def clone(self, name: str, linked: bool = False, *, count: int | None = None,
              node: Node | str | None = None, wait: bool = True,
              timeout: float | None = DEFAULT_TIMEOUT,
              on_progress: ProgressCallback | None = None) -> Any:
        """Copy this VM as ``name`` (a new id and new MACs); ``linked=True`` shares the
        original's disks copy-on-write. With ``count=N``, makes N clones named
        ``name-1`` .. ``name-N`` and returns them as a list."""
        check_name(name, "clone name")
        self._host.require(Capability.LINKED_CLONE if linked else Capability.FULL_CLONE)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise InvalidSpec(f"count must be a whole number of at least 1, not {count!r}")
        names = [name] if count is None else [f"{name}-{i}" for i in range(1, count + 1)]
        for n in names:
            check_name(n, "clone name")
            if self._host.vms.exists(n):
                raise AlreadyExists(f"a VM named {n!r} exists already on {self._host.uri}")
        node_id = _node_id(self._host, node)
        self.refresh()
        reservation = self._host.reserve_capacity(self.cpus * len(names),
                                                  self.memory_mib * len(names))

        def work(job: Job) -> Any:
            made: list[VM] = []
            try:
                for i, n in enumerate(names):
                    job.progress(100.0 * i / len(names), f"cloning {n}")
                    made.append(VM(self._host,
                                   self._host.driver.clone_vm(self.id, n, linked, node_id, job)))
            finally:
                reservation.release()
            return made if count is not None else made[0]

        return self._host.run(f"clone {self.name}", work, wait=wait, timeout=timeout, on_progress=on_progress)

    def migrate(self, to: Node | Host, live: bool | None = None, *, wait: bool = True,
                timeout: float | None = DEFAULT_TIMEOUT,
                on_progress: ProgressCallback | None = None) -> Any:
        """Move this VM to another node of the same host, or to another host of the same
        backend. ``live`` defaults to True for a running VM. Across platforms, use
        ``anyvirt.migrate``. Returns a ``MigrationResult``."""
        from anyvirt.host import Host
        from anyvirt.node import Node

        if live is not None:
            self._host.require(Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION)
        self.refresh()
        running = self.state is PowerState.RUNNING
        live = running if live is None else live
        if live and not running:
            raise InvalidState(f"live migration needs {self.name!r} running; it is {self.state}")
        if not live and self.state in (PowerState.RUNNING, PowerState.PAUSED):
            raise InvalidState(
                f"cold migration needs {self.name!r} stopped; it is {self.state} (or use live=True)"
            )
        self._host.require(Capability.LIVE_MIGRATION if live else Capability.COLD_MIGRATION)
        target_driver = None
        node_id: str | None
        if isinstance(to, Node):
            if to.host is not self._host:
                target_driver = to.host.driver
            node_id = to.id
            target_host = to.host
        elif isinstance(to, Host):
            if to is self._host:
                raise InvalidSpec(f"{self.name!r} is already on {to.uri}: migrate to a node of it")
            target_driver, node_id, target_host = to.driver, None, to
        else:
            raise InvalidSpec(f"migrate(to=...) takes a Node or a Host, not {type(to).__name__}")
        if target_host.backend != self._host.backend:
            raise InvalidSpec(
                f"{self._host.backend} -> {target_host.backend} is a cross-platform move: "
                "use anyvirt.migrate(vm, to=host)"
            )
        if target_driver is None and node_id in (self.node,):
            raise InvalidSpec(f"{self.name!r} is already on node {node_id!r}")
        reservation = None
        if target_host is not self._host and target_host.uri != self._host.uri:
            # another host: the name must be free there and the VM must fit its limit
            if target_host.vms.exists(self.name):
                raise AlreadyExists(f"a VM named {self.name!r} exists already on {target_host.uri}")
            reservation = target_host.reserve_capacity(self.cpus, self.memory_mib)

        def work(job: Job) -> MigrationResult:
            started = time.monotonic()
            try:
                result = self._host.driver.migrate_vm(self.id, target_driver, node_id, live, job)
            finally:
                if reservation is not None:
                    reservation.release()
            if target_driver is not None:
                self._host = target_host
            with contextlib.suppress(NotFound):  # a backend may rename or re-id on arrival
                self.refresh()
            if not result.duration_s:
                result = evolve(result, duration_s=round(time.monotonic() - started, 3))
            return result

        return self._host.run(f"migrate {self.name}", work, wait=wait, timeout=timeout,
                              on_progress=on_progress)


def _node_id(host: Host, node: Node | str | None) -> str | None:
    from anyvirt.node import Node

    if node is None:
        return None
    if isinstance(node, Node):
        return node.id
    return host.nodes.get(node).id
