"""Shared pieces of the hostile-input tests: the three targets, and what "nothing changed" means.

Each target is real where the backend is: a real isolated libvirtd (the
libvirt testbed), a real vcsim (the vSphere testbed), and memory://. A
``Target`` carries the host and a ``fingerprint()`` of everything an error
must leave untouched: the VMs (id, name, state, size, description), and the
files behind them (libvirt's storage volumes, vcsim's datastore directory).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anyvirt_libvirt.testbed import fixtures as libvirt_fixtures
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from anyvirt_proxmox.testbed import fixtures as proxmox_fixtures
from anyvirt_proxmox.testbed.fakepve import FakePveTestbed
from anyvirt_vsphere.testbed import fixtures as vcsim_fixtures
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt
from anyvirt import memory
from anyvirt.errors import AnyvirtError
from anyvirt.host import Host
from anyvirt.model import PowerState

libvirt_daemon = libvirt_fixtures.libvirt_daemon
vcsim_vcenter = vcsim_fixtures.vcsim_vcenter
proxmox_testbed = proxmox_fixtures.proxmox_testbed

BACKENDS = ("memory", "libvirt", "vsphere")


class Target:
    """One host under attack, and how to read everything an error must not change."""

    def __init__(self, backend: str, host: Host, files: Callable[[], list[str]]) -> None:
        self.backend = backend
        self.host = host
        self._files = files

    def __repr__(self) -> str:
        return f"<Target {self.backend}>"

    def fingerprint(self) -> tuple[Any, ...]:
        vms = sorted((vm.id, vm.name, vm.state.value, vm.cpus, vm.memory_mib)
                     for vm in self.host.vms.list())
        return tuple(vms), tuple(sorted(self._files()))

    @contextlib.contextmanager
    def unchanged_on_error(self) -> Iterator[None]:
        """Run the block; if it raises, the host must be exactly as before (and only an
        AnyvirtError may come out)."""
        before = self.fingerprint()
        try:
            yield
        except AnyvirtError:
            after = self.fingerprint()
            assert after == before, f"an error left changes on {self.backend}"
            raise

    def remove(self, name: str) -> None:
        """Delete the VM ``name`` if it exists (whatever state it is in)."""
        with contextlib.suppress(AnyvirtError):
            vm = self.host.vms.get(name)
            if vm.state in (PowerState.RUNNING, PowerState.PAUSED, PowerState.SUSPENDED):
                vm.stop(force=True)
            vm.delete(disks=True)


def _libvirt_volumes(host: Host) -> Callable[[], list[str]]:
    def files() -> list[str]:
        found = []
        for pool in host.native.listAllStoragePools():
            if pool.isActive():
                pool.refresh(0)
                found += [f"{pool.name()}/{vol.name()}" for vol in pool.listAllVolumes()]
        return found
    return files


def _tree(root: Path) -> Callable[[], list[str]]:
    def files() -> list[str]:
        return [os.path.relpath(os.path.join(d, f), root) for d, dirs, names in os.walk(root)
                for f in [*names, *(x + "/" for x in dirs)]]
    return files


@pytest.fixture(scope="session")
def libvirt_target(libvirt_daemon: LibvirtDaemon) -> Iterator[Target]:
    with anyvirt.connect(libvirt_daemon.anyvirt_uri) as host:
        yield Target("libvirt", host, _libvirt_volumes(host))


@pytest.fixture(scope="session")
def vsphere_target(vcsim_vcenter: Vcsim) -> Iterator[Target]:
    with anyvirt.connect(vcsim_vcenter.anyvirt_uri_with_ca, password=vcsim_vcenter.password) as host:
        assert vcsim_vcenter.datastore_dir is not None
        yield Target("vsphere", host, _tree(vcsim_vcenter.datastore_dir))


@pytest.fixture(scope="session")
def proxmox_target(proxmox_testbed: FakePveTestbed) -> Iterator[Target]:
    """fakepve keeps its state in its own process: the VM listing is all there is to compare."""
    with anyvirt.connect(proxmox_testbed.uri, password=proxmox_testbed.password) as host:
        yield Target("proxmox", host, lambda: [])


@pytest.fixture
def memory_target() -> Iterator[Target]:
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    with anyvirt.connect(f"memory://{name}") as host:
        yield Target("memory", host, lambda: [])
    memory.reset(name)


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest) -> Target:
    """Each backend in turn: memory://, a real libvirtd, a vcsim vCenter."""
    found: Target = request.getfixturevalue(f"{request.param}_target")
    return found


__all__ = ["BACKENDS", "Target", "libvirt_daemon", "libvirt_target", "memory_target",
           "proxmox_target", "proxmox_testbed", "target", "vcsim_vcenter",
           "vsphere_target"]
