"""Helpers shared by the VirtualBox backend's tests (a module name no other test folder uses)."""

from __future__ import annotations

from anyvirt_virtualbox import machinereadable
from anyvirt_virtualbox.testbed import Home


def show(home: Home, vm: str) -> machinereadable.Parsed:
    """What ``VBoxManage showvminfo --machinereadable`` says of ``vm``, read past anyvirt."""
    return machinereadable.parse(home.run("showvminfo", vm, "--machinereadable").stdout)
