"""Helpers shared by the libvirt backend's tests (a module with a name no other test dir uses)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

from anyvirt.errors import AnyvirtError
from anyvirt.model import DiskSpec, PowerState, VMSpec
from anyvirt.vm import VM


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


def nocloud_seed(directory: Path, hostname: str, user: str, key: str) -> Path:
    """A NoCloud seed ISO labelled ``cidata``, as cloud-init reads it, written by Debian's xorriso
    (independent of anyvirt's own seed writer)."""
    files = directory / f"{hostname}-seed"
    files.mkdir()
    (files / "meta-data").write_text(f"instance-id: iid-{hostname}\nlocal-hostname: {hostname}\n")
    (files / "user-data").write_text(
        "#cloud-config\n"
        "users:\n"
        f"- name: {user}\n"
        "  sudo: ALL=(ALL) NOPASSWD:ALL\n"
        "  ssh_authorized_keys:\n"
        f"  - {key}\n"
    )
    (files / "network-config").write_text("version: 2\nethernets:\n  nic0:\n    match: {name: 'e*'}\n"
                                          "    dhcp4: true\n")
    iso = directory / f"{hostname}-seed.iso"
    xorriso = shutil.which("xorriso")
    assert xorriso, "xorriso (Debian package xorriso) writes the test seeds"
    subprocess.run([xorriso, "-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r", "-o", str(iso),
                    str(files)], check=True, capture_output=True, timeout=60)
    return iso
