"""Two real libvirtd daemons for the recovery tests: A (the host that fails) and B, both
with a pool ``shared`` on one directory, and the ways A fails."""

from __future__ import annotations

import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anyvirt_libvirt.testbed import daemon as daemons
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon

SHARED_POOL = "shared"


@contextmanager
def failing_pair() -> Iterator[tuple[LibvirtDaemon, LibvirtDaemon, Path]]:
    """(a, b, shared directory); A keeps its state in a directory of ours, so it can come back."""
    base = Path(tempfile.mkdtemp(prefix="avrec-"))
    shared = base / "shared"
    shared.mkdir()
    a = LibvirtDaemon(base / "a", name="a")
    b = LibvirtDaemon(base / "b", name="b")
    try:
        for daemon in (a, b):
            daemon.start()
            add_pool(daemon, SHARED_POOL, shared)
        yield a, b, shared
    finally:
        for daemon in (a, b):
            daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


def add_pool(daemon: LibvirtDaemon, name: str, directory: Path) -> None:
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = name
    ET.SubElement(ET.SubElement(root, "target"), "path").text = str(directory)
    conn = daemon.open()
    try:
        pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
        pool.create(0)
        pool.setAutostart(1)
    finally:
        conn.close()


def power_cut(daemon: LibvirtDaemon) -> None:
    """The daemon and every QEMU it started die at once; its state directory stays."""
    daemon.kill()
    assert daemons._kill_processes_seeing(daemon.workdir / "run", grace=10.0) == []


def active_domains(daemon: LibvirtDaemon) -> list[str]:
    conn = daemon.open()
    try:
        return sorted(d.name() for d in conn.listAllDomains(1))  # VIR_CONNECT_LIST_DOMAINS_ACTIVE
    finally:
        conn.close()
