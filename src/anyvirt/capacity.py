"""Allocation accounting and the overcommit guard.

Allocation counts every defined VM (running or not, templates excepted):
a stopped VM can be started at any time, so its CPUs and memory are spoken
for. ``check`` refuses a change that would push vCPUs or memory past
capacity times the overcommit ratio.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import attrs

from anyvirt.errors import CapacityExceeded
from anyvirt.model import Allocation, HostInfo, Overcommit, PowerState, VMSummary


def allocation(info: HostInfo, vms: Iterable[VMSummary]) -> Allocation:
    counted = [vm for vm in vms if not vm.template]
    vcpus = sum(vm.cpus for vm in counted)
    memory = sum(vm.memory_mib for vm in counted)
    return Allocation(
        vms=len(counted),
        running_vms=sum(1 for vm in counted if vm.state is PowerState.RUNNING),
        vcpus=vcpus,
        memory_mib=memory,
        cpu_ratio=round(vcpus / info.cpus, 4) if info.cpus else 0.0,
        memory_ratio=round(memory / info.memory_mib, 4) if info.memory_mib else 0.0,
    )


def check(info: HostInfo, add_cpus: int, add_memory_mib: int, policy: Overcommit) -> None:
    """Raise ``CapacityExceeded`` if adding this much would pass the overcommit limit."""
    used = info.allocation
    cpu_limit = info.cpus * policy.cpu  # inf with Overcommit.unlimited(): never refused
    mem_limit = info.memory_mib * policy.memory
    if info.cpus and add_cpus > 0 and used.vcpus + add_cpus > cpu_limit:
        raise CapacityExceeded(
            f"{add_cpus} more vCPUs would make {used.vcpus + add_cpus} on {info.name}, "
            f"past its limit of {cpu_limit:g} ({info.cpus} CPUs x overcommit {policy.cpu:g})"
        )
    if info.memory_mib and add_memory_mib > 0 and used.memory_mib + add_memory_mib > mem_limit:
        raise CapacityExceeded(
            f"{add_memory_mib} MiB more memory would make {used.memory_mib + add_memory_mib} MiB "
            f"on {info.name}, past its limit of {mem_limit:g} MiB "
            f"({info.memory_mib} MiB x overcommit {policy.memory:g})"
        )


# Capacity being given out by operations still under way, per host URI. Without
# it, several threads creating at once would all pass ``check`` against the same
# listing and together go past the limit.
_pending_guard = threading.Lock()
_pending_locks: dict[str, threading.Lock] = {}
_pending: dict[str, list[Reservation]] = {}


@attrs.define(eq=False)
class Reservation:
    """CPUs and memory promised to an operation that has not finished; ``release()`` it."""

    key: str
    cpus: int
    memory_mib: int

    def release(self) -> None:
        with _pending_guard:
            held = _pending.get(self.key, [])
            if self in held:
                held.remove(self)


def reserve(key: str, info: Callable[[], HostInfo], add_cpus: int, add_memory_mib: int,
            policy: Overcommit) -> Reservation:
    """``check`` against the host's allocation plus what other operations on the same
    host (``key``, its safe URI) hold, and hold this much too until released."""
    with _pending_guard:
        lock = _pending_locks.setdefault(key, threading.Lock())
    with lock:
        # what is held first, then the host: a reservation released in between has its
        # change applied already (an operation applies, then releases), so it is counted
        # in one of the two, perhaps twice, never in neither
        with _pending_guard:
            held = list(_pending.get(key, []))
        current = info()
        used = current.allocation
        pending = attrs.evolve(
            used,
            vcpus=used.vcpus + sum(r.cpus for r in held),
            memory_mib=used.memory_mib + sum(r.memory_mib for r in held),
        )
        check(attrs.evolve(current, allocation=pending), add_cpus, add_memory_mib, policy)
        reservation = Reservation(key, max(0, add_cpus), max(0, add_memory_mib))
        with _pending_guard:
            _pending.setdefault(key, []).append(reservation)
        return reservation
