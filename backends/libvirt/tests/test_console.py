"""The interactive serial console (``vm.console()``) on real QEMU guests.

The boot-sector guest's live counter is read through the console while it runs; the Linux
test guest's busybox shell on the serial line is given a command and its answer read back
(the answer is computed by the guest, so an echo of the typed line cannot pass for it).
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from anyvirt_libvirt.demo_image import MARKER
from anyvirt_libvirt.testbed.daemon import LibvirtDaemon
from anyvirt_libvirt.testbed.network import IsolatedNetwork

from anyvirt.errors import ConsoleClosed, InvalidState
from anyvirt.host import Host
from anyvirt.model import DiskSpec, VMSpec
from anyvirt.testing.suite.test_console import read_until_it_ends
from anyvirt.vm import VM

COUNT = re.compile(rb"COUNT (\d+)\r?\n")
BOOT_TIMEOUT = 180.0  # a bound, not the expected time: a TCG guest on a shared 2-core machine


def test_a_running_guest_s_output_is_read_live_through_its_console(
        guest: Callable[[str], VM]) -> None:
    vm = guest("con")
    with pytest.raises(InvalidState, match="start it first"):
        vm.console()  # stopped: refused before anything is sent
    vm.start()
    with vm.console() as console:
        first = int(COUNT.search(console.expect(COUNT, timeout=60)).group(1))  # type: ignore[union-attr]
        later = int(COUNT.search(console.expect(COUNT, timeout=30)).group(1))  # type: ignore[union-attr]
        assert later > first  # live output, not a replay of a log
        with pytest.raises(InvalidState, match="in use by another session"):
            vm.console()  # one session at a time, as virsh console keeps it
    assert console.closed
    with pytest.raises(ConsoleClosed):
        console.read()
    with vm.console() as again:  # the first detached cleanly: the console is free again
        again.expect(COUNT, timeout=30)
    vm.stop(force=True)


def pty_lock(vm: VM) -> Path:
    """The lock file libvirt keeps for the pty of the running VM's console while a console
    stream is open on it (``virsh console`` does the same)."""
    xml = vm.native.XMLDesc(0)
    found = re.search(r"<console type='pty'[^>]*>\s*<source path='/dev/([^']+)'", xml)
    assert found, xml
    return Path("/var/lock") / ("LCK.._" + found.group(1).replace("/", "_"))


def test_the_console_of_a_guest_that_stops_ends(guest: Callable[[str], VM]) -> None:
    vm = guest("conend")
    vm.start()
    with vm.console() as console:
        console.expect(MARKER, timeout=60)
        lock = pty_lock(vm)
        assert lock.exists()
        vm.stop(force=True)
        with pytest.raises(ConsoleClosed):
            read_until_it_ends(console)
    # detached although the other end had gone: a stream never finished keeps libvirt's
    # side open, and the pty's lock file with it, which refuses the next console on that
    # pty number ("locked by lock file ... held by process", the daemon) for its lifetime
    assert not lock.exists()


def test_input_typed_on_the_console_reaches_the_guest_s_shell(
        tcg_host: Host, linux_guest_disk: Path, vms: Callable[[VM], VM],
        libvirt_isolated_daemon: tuple[LibvirtDaemon, IsolatedNetwork]) -> None:
    spec = VMSpec(name=f"sh-{uuid.uuid4().hex[:6]}", cpus=1, memory_mib=192,
                  disks=[DiskSpec(image=str(linux_guest_disk))], nics=[])
    vm = vms(tcg_host.vms.create(spec))
    vm.start()
    with vm.console() as console:
        console.expect("init-done", timeout=BOOT_TIMEOUT)
        console.write("\r")
        console.expect("/ # ", timeout=30)  # busybox's prompt
        console.write("echo anyvirt-$((6*7))\r")
        console.expect("anyvirt-42", timeout=30)
    # the same through the CLI, in a process of its own, with piped input
    daemon, _ = libvirt_isolated_daemon
    done = subprocess.run(
        [str(Path(sys.executable).with_name("anyvirt")), "vm", "console", "-i",
         f"{daemon.anyvirt_uri}&accel=tcg", vm.name],
        input=b"echo cli-$((6*7))\r", capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert b"cli-42" in done.stdout
    vm.stop(force=True)
