"""``anyvirt vm console -i``: the terminal session over a memory VM's console (an echoing
line), fed by a real pipe and a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import termios
import threading
from collections.abc import Iterator

import pytest

import anyvirt
from anyvirt.cli.console_session import ESCAPE, interact
from anyvirt.host import Host
from anyvirt.model import VMSpec
from anyvirt.vm import VM


@pytest.fixture
def running() -> Iterator[VM]:
    host: Host = anyvirt.connect("memory://console-session")
    vm = host.vms.create(VMSpec(name="con", cpus=1, memory_mib=64))
    vm.start()
    yield vm
    vm.stop(force=True)
    vm.delete()
    host.close()


def test_piped_input_is_sent_and_the_answer_shown_until_quiet(running: VM) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"uname -a\r")
    os.close(write_end)
    out = io.BytesIO()
    with running.console() as console:
        ended = interact(console, read_end, out, quiet=0.3)
    os.close(read_end)
    assert ended == "input ended"
    assert out.getvalue() == b"uname -a\r"  # the memory guest's echo, bytes unchanged


def test_in_a_terminal_keys_go_raw_and_ctrl_bracket_leaves(running: VM) -> None:
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    out = io.BytesIO()
    try:
        with running.console() as console:
            # typed once the session has the terminal (in raw mode: ^C is a byte, not a signal)
            threading.Timer(0.3, os.write, (master, b"ls\x03" + ESCAPE + b"never sent")).start()
            ended = interact(console, slave, out)
        assert ended == "escape"
        assert out.getvalue() == b"ls\x03"  # Ctrl-C went to the guest, not to this process
        assert termios.tcgetattr(slave) == before  # the terminal is given back as it was
    finally:
        os.close(master)
        os.close(slave)


def test_the_session_ends_when_the_vm_stops(running: VM) -> None:
    read_end, write_end = os.pipe()  # input stays open: only the console's end stops it
    out = io.BytesIO()
    try:
        with running.console() as console:
            threading.Timer(0.3, lambda: running.stop(force=True)).start()
            assert interact(console, read_end, out) == "console ended"
    finally:
        os.close(read_end)
        os.close(write_end)
    running.start()  # for the fixture's own stop
