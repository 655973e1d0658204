"""Fixtures shared by the core's test modules: the real testbeds' session fixtures, a pair of
memory:// hosts (a move's source and target), and a real sshd on loopback.

Imported rather than named in ``pytest_plugins`` (pytest accepts that only in the
rootdir's conftest). One libvirtd, one vcsim and one fakepve then serve the tour tests and the
command-line tests alike, instead of one per module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyvirt_libvirt.testbed.fixtures import libvirt_daemon
from anyvirt_proxmox.testbed.fixtures import proxmox_testbed
from anyvirt_vsphere.testbed.fixtures import vcsim_vcenter
from sshd_support import Sshd, sshd

import anyvirt

__all__ = ["libvirt_daemon", "proxmox_testbed", "vcsim_vcenter"]


@pytest.fixture
def uris() -> Iterator[tuple[str, str]]:
    """Two fresh memory:// hosts' URIs, a source and a target, reset afterwards."""
    from anyvirt import memory

    names = [f"pair-{role}-{uuid.uuid4().hex[:8]}" for role in ("src", "dst")]
    yield f"memory://{names[0]}", f"memory://{names[1]}"
    for name in names:
        memory.reset(name)


@pytest.fixture
def hosts(uris: tuple[str, str]) -> Iterator[tuple[anyvirt.Host, anyvirt.Host]]:
    """The two hosts of ``uris``, connected."""
    with anyvirt.connect(uris[0]) as source, anyvirt.connect(uris[1]) as target:
        yield source, target


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Sshd]:
    """A real OpenSSH server on loopback serving a directory (tests/sshd_support.py)."""
    with sshd(tmp_path / "ssh") as running:
        yield running


@pytest.fixture(scope="session")
def embedded_data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``$XDG_DATA_HOME`` for every use of the embedded QEMU inside this process: libvirt
    opens the embedded driver once per process, at one root
    (``$XDG_DATA_HOME/anyvirt/qemu-embed``), and refuses any other root after that."""
    return tmp_path_factory.mktemp("embedded-data")


@pytest.fixture(scope="session")
def embed_uri(embedded_data_home: Path) -> str:
    """The embedded QEMU at the process's one root (see ``embedded_data_home``)."""
    return f"libvirt+qemu:///embed?root={embedded_data_home / 'anyvirt' / 'qemu-embed'}"
