"""An empty image is refused by its own name, not by a size field the caller never set."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from anyvirt.errors import InvalidSpec
from anyvirt.host import Host
from anyvirt.model import DiskSpec, VMSpec
from anyvirt.testing.suite.spy import recording


@pytest.mark.parametrize("kind", ["zero-bytes", "qcow2-of-size-0"])
def test_an_empty_image_is_named(vsphere_host: Host, tmp_path: Path, kind: str) -> None:
    image = tmp_path / f"{kind}.img"
    if kind == "zero-bytes":
        image.write_bytes(b"")
    else:  # a valid qcow2 file whose disk holds 0 bytes
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "0"], check=True,
                       timeout=60)
        assert image.stat().st_size > 0
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    before = {vm.id for vm in vsphere_host.vms.list()}
    with recording(vsphere_host) as calls, pytest.raises(InvalidSpec) as refused:
        vsphere_host.vms.create(VMSpec(name="from-empty", node=node,
                                       disks=[DiskSpec(image=str(image))]))
    assert calls == []
    message = str(refused.value)
    assert str(image) in message and "empty" in message and "size_gib" not in message
    assert {vm.id for vm in vsphere_host.vms.list()} == before
