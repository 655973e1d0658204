"""Helpers shared by the libvirt backend's tests (a module with a name no other test dir uses)."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from anyvirt.errors import AnyvirtError
from anyvirt.model import DiskSpec, PowerState, VMSpec
from anyvirt.vm import VM


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def guest_spec(name: str, image: Path) -> VMSpec:
    """A VM that really boots: the tiny guest, 16 MiB, no NIC."""
    return VMSpec(name=name, cpus=1, memory_mib=16, disks=[DiskSpec(image=str(image))], nics=[])


def console_log(vm: VM) -> Path:
    return Path(vm.info().extra["console_log"])


def destroy(vm: VM) -> None:
    with contextlib.suppress(AnyvirtError):
        vm.refresh()
        if vm.state in (PowerState.RUNNING, PowerState.PAUSED, PowerState.CRASHED,
                        PowerState.SUSPENDED):
            vm.stop(force=True, timeout=60)
        vm.delete(disks=True)
