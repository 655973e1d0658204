"""Many threads of mixed operations on one host, watching the overcommit limit.

``mixed_operations`` runs creates, starts, power-offs, reconfigures, clones,
snapshots, reverts and deletes from many threads at once while a sampler
reads the host's allocation as fast as it can. It reports the highest
allocation seen, every error that was not an ``AnyvirtError`` (the contract
allows only those) and what each operation ended in. A backend's tests call
it against their testbed; the memory backend's tests do the same.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

from attrs import define, field

from anyvirt import capacity
from anyvirt.errors import AnyvirtError, NotFound
from anyvirt.host import Host
from anyvirt.model import Capability, PowerState, VMSpec
from anyvirt.vm import VM


@define
class StressReport:
    max_vcpus: int = 0
    max_memory_mib: int = 0
    samples: int = 0
    outcomes: Counter[str] = field(factory=Counter)
    unexpected: list[BaseException] = field(factory=list)


def mixed_operations(host: Host, spec: Callable[[str], VMSpec], *, threads: int = 20,
                     seconds: float = 5.0, prefix: str = "stress", seed: int = 7) -> StressReport:
    """Run the mix for ``seconds``, then remove every VM it made; see the module doc."""
    report = StressReport()
    lock = threading.Lock()
    stop = threading.Event()
    made: dict[str, VM] = {}
    caps = host.capabilities

    def note(outcome: str) -> None:
        with lock:
            report.outcomes[outcome] += 1

    def sample() -> None:
        while not stop.is_set():
            try:
                alloc = host.info().allocation
            except AnyvirtError:
                continue
            with lock:
                report.samples += 1
                vcpus, memory_mib = capacity.counted(alloc, host.overcommit)  # by its rule
                report.max_vcpus = max(report.max_vcpus, vcpus)
                report.max_memory_mib = max(report.max_memory_mib, memory_mib)

    def pick(rng: random.Random) -> VM | None:
        with lock:
            vms = list(made.values())
        return rng.choice(vms) if vms else None

    def one(rng: random.Random, worker: int, n: int) -> None:
        vm = pick(rng)
        op = rng.choice(["create", "create", "start", "off", "cpus", "clone", "snap", "revert",
                         "delete"])
        if vm is None or op == "create":
            new = host.vms.create(spec(f"{prefix}-{worker}-{n}"), timeout=120)
            with lock:
                made[new.id] = new
        elif op == "start" and Capability.START in caps:
            vm.start(timeout=120)
        elif op == "off" and Capability.POWER_OFF in caps:
            vm.stop(force=True, timeout=120)
        elif op == "cpus" and Capability.RECONFIGURE in caps:
            vm.reconfigure(cpus=rng.choice([1, 2]), timeout=120)
        elif op == "clone" and Capability.FULL_CLONE in caps:
            clone = vm.clone(f"{prefix}-c{worker}-{n}", timeout=120)
            with lock:
                made[clone.id] = clone
        elif op == "snap" and Capability.SNAPSHOTS in caps:
            vm.snapshots.create(f"s{worker}-{n}", timeout=120)
        elif op == "revert" and Capability.SNAPSHOTS in caps:
            snaps = vm.snapshots.list()
            if snaps:
                rng.choice(snaps).revert(timeout=120)
        elif op == "delete":
            vm.delete(timeout=120)
            with lock:
                made.pop(vm.id, None)
        note(op)

    def work(worker: int) -> None:
        rng = random.Random(seed * 1000 + worker)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                one(rng, worker, n)
            except AnyvirtError as exc:
                note(type(exc).__name__)
            except BaseException as exc:  # the contract allows AnyvirtError only
                with lock:
                    report.unexpected.append(exc)

    sampler = threading.Thread(target=sample, daemon=True)
    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    sampler.start()
    for t in workers:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in workers:
        t.join(300)
    sampler.join(60)
    for vm in list(made.values()):
        with contextlib.suppress(NotFound, AnyvirtError):
            vm.refresh()
            if vm.state in (PowerState.RUNNING, PowerState.PAUSED):
                vm.stop(force=True)
            vm.delete()
    return report
