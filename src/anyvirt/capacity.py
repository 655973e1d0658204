"""Allocation accounting and the overcommit guard.

Allocation counts every defined VM (running or not, templates excepted):
a stopped VM can be started at any time, so its CPUs and memory are spoken
for. ``check`` refuses a change that would push vCPUs or memory past
capacity times the overcommit ratio.
"""

from __future__ import annotations

from collections.abc import Iterable

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
