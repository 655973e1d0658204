"""Allocation accounting and the overcommit guard.

Allocation sums every defined VM (templates excepted), and apart the powered-on
ones. Which of the two the limit holds is the policy's ``counts`` rule (see
:class:`~anyvirt.model.Overcommit`). ``check`` refuses a change that would push
the counted vCPUs or memory past capacity times the overcommit ratio.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from anyvirt.errors import CapacityExceeded, InvalidSpec
from anyvirt.model import OVERCOMMIT_COUNTS, Allocation, HostInfo, Overcommit, PowerState, VMSummary

#: the states in which a VM holds its CPUs and memory (a suspended VM's memory is on disk)
POWERED_ON = frozenset({PowerState.RUNNING, PowerState.PAUSED})


def allocation(info: HostInfo, vms: Iterable[VMSummary]) -> Allocation:
    counted = [vm for vm in vms if not vm.template]
    powered_on = [vm for vm in counted if vm.state in POWERED_ON]
    vcpus = sum(vm.cpus for vm in counted)
    memory = sum(vm.memory_mib for vm in counted)
    return Allocation(
        vms=len(counted),
        running_vms=sum(1 for vm in counted if vm.state is PowerState.RUNNING),
        vcpus=vcpus,
        memory_mib=memory,
        cpu_ratio=round(vcpus / info.cpus, 4) if info.cpus else 0.0,
        memory_ratio=round(memory / info.memory_mib, 4) if info.memory_mib else 0.0,
        powered_on_vcpus=sum(vm.cpus for vm in powered_on),
        powered_on_memory_mib=sum(vm.memory_mib for vm in powered_on),
    )


def counted(used: Allocation, policy: Overcommit) -> tuple[int, int]:
    """The vCPUs and memory the policy's rule holds against the limit."""
    if policy.counts == "defined":
        return used.vcpus, used.memory_mib
    return used.powered_on_vcpus, used.powered_on_memory_mib


def _whose(policy: Overcommit) -> str:
    return "defined VMs'" if policy.counts == "defined" else "powered-on VMs'"


def check(info: HostInfo, add_cpus: int, add_memory_mib: int, policy: Overcommit) -> None:
    """Raise ``CapacityExceeded`` if adding this much would pass the overcommit limit."""
    vcpus, memory = counted(info.allocation, policy)
    cpu_limit = info.cpus * policy.cpu  # inf with Overcommit.unlimited(): never refused
    mem_limit = info.memory_mib * policy.memory
    if info.cpus and add_cpus > 0 and vcpus + add_cpus > cpu_limit:
        raise CapacityExceeded(
            f"{add_cpus} more vCPUs would make {vcpus + add_cpus} {_whose(policy)} vCPUs on "
            f"{info.name}, past its limit of {cpu_limit:g} ({info.cpus} CPUs x overcommit "
            f"{policy.cpu:g}); a looser policy: --overcommit cpu=N or ?overcommit=cpu=N"
        )
    if info.memory_mib and add_memory_mib > 0 and memory + add_memory_mib > mem_limit:
        raise CapacityExceeded(
            f"{add_memory_mib} MiB more memory would make {memory + add_memory_mib} MiB of "
            f"{_whose(policy)} memory on {info.name}, past its limit of {mem_limit:g} MiB "
            f"({info.memory_mib} MiB x overcommit {policy.memory:g})"
        )


def parse_overcommit(value: Overcommit | str | Mapping[str, Any], where: str) -> Overcommit:
    """An :class:`Overcommit` from any form a user writes one in: the object, its text
    (``cpu=8,memory=1.5,counts=defined``, ``unlimited``) or a mapping (a profile's table).
    ``where`` names the setting for the error."""
    if isinstance(value, Overcommit):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text == "unlimited":
            return Overcommit.unlimited()
        fields: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, raw = item.replace(":", "=", 1).partition("=")
            if not sep:
                raise InvalidSpec(f"{where}: {item!r} is not key=value "
                                  "(as in cpu=8,memory=1.5,counts=defined)")
            fields[key.strip()] = raw.strip()
        value = fields
    if not isinstance(value, Mapping):
        raise InvalidSpec(f"{where} must be an anyvirt.Overcommit, its text or a table, "
                          f"not {type(value).__name__}")
    unknown = set(value) - {"cpu", "memory", "counts"}
    if unknown:
        raise InvalidSpec(f"{where} has no {', '.join(sorted(unknown))} "
                          f"(it takes cpu, memory and counts: {' or '.join(OVERCOMMIT_COUNTS)})")
    kwargs: dict[str, Any] = {}
    for key in ("cpu", "memory"):
        if key in value:
            kwargs[key] = _ratio(value[key], f"{where} {key}")
    if "counts" in value:
        kwargs["counts"] = str(value["counts"])
    return Overcommit(**kwargs)


def _ratio(raw: Any, what: str) -> float:
    if isinstance(raw, bool):
        raise InvalidSpec(f"{what} must be a number, not {raw!r}")
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise InvalidSpec(f"{what} must be a number, not {raw!r}") from None
    if math.isnan(number) or number <= 0:
        raise InvalidSpec(f"{what} must be greater than 0, not {raw!r}")
    return number


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
    if math.isinf(policy.cpu) and math.isinf(policy.memory):
        # nothing passes an unlimited policy: no host read (a listing per operation)
        return Reservation(key, 0, 0)
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
        held_cpus, held_memory = sum(r.cpus for r in held), sum(r.memory_mib for r in held)
        # what is held will be counted, whichever rule: add it to both sums
        pending = attrs.evolve(
            used,
            vcpus=used.vcpus + held_cpus,
            memory_mib=used.memory_mib + held_memory,
            powered_on_vcpus=used.powered_on_vcpus + held_cpus,
            powered_on_memory_mib=used.powered_on_memory_mib + held_memory,
        )
        check(attrs.evolve(current, allocation=pending), add_cpus, add_memory_mib, policy)
        reservation = Reservation(key, max(0, add_cpus), max(0, add_memory_mib))
        with _pending_guard:
            _pending.setdefault(key, []).append(reservation)
        return reservation
