"""``anyvirt vm console -i``: your terminal on a VM's serial line, as ``virsh console`` gives it.

In a terminal, keys go to the guest as typed (raw mode) and Ctrl-] leaves. With input from a
pipe, the input is sent, then the guest's answer is shown until it has been quiet a moment:
``printf 'uname -a\\r' | anyvirt vm console -i web1`` works in a script.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from typing import BinaryIO

from anyvirt.console import Console
from anyvirt.errors import ConsoleClosed

#: Ctrl-]: leaves the console, as in virsh and telnet
ESCAPE = b"\x1d"
#: what ended a session whose output's reader went away (``anyvirt vm console -i VM | head``)
OUTPUT_CLOSED = "output closed"
#: how long each wait for input or output lasts before the loop looks again (seconds)
TICK = 0.1


def interact(console: Console, in_fd: int, out: BinaryIO, *, quiet: float = 1.0,
             linger: float = 10.0) -> str:
    """Join ``in_fd`` (keys) and ``out`` (the guest's bytes, as they come) to ``console``
    until Ctrl-], the end of piped input and then ``quiet`` seconds without output (at most
    ``linger`` seconds: a guest that never falls quiet), the console's end, or the reader of
    ``out`` going away (``| head``). What ended it: "escape", "input ended", "console ended"
    or "output closed"."""
    stop = threading.Event()
    last_output = [time.monotonic()]
    ended: list[str] = []

    def pump_output() -> None:
        while not stop.is_set():
            try:
                data = console.read(timeout=TICK)
            except ConsoleClosed:
                ended.append("console ended")
                stop.set()
                return
            if data:
                last_output[0] = time.monotonic()
                try:
                    out.write(data)
                    out.flush()
                except BrokenPipeError:  # nobody reads any more: the session is over
                    ended.append(OUTPUT_CLOSED)
                    stop.set()
                    return

    reader = threading.Thread(target=pump_output, name="console-output", daemon=True)
    reader.start()
    interactive = os.isatty(in_fd)
    try:
        with _raw(in_fd) if interactive else contextlib.nullcontext():
            reason = _pump_input(console, in_fd, stop, interactive)
            if reason == "input ended":
                until = time.monotonic() + linger
                while (not stop.is_set() and time.monotonic() < until
                       and time.monotonic() - last_output[0] < quiet):
                    time.sleep(TICK)
    finally:
        stop.set()
        reader.join(timeout=2 * TICK + 1)
    return ended[0] if ended else reason


def _pump_input(console: Console, in_fd: int, stop: threading.Event, interactive: bool) -> str:
    while not stop.is_set():
        ready, _, _ = select.select([in_fd], [], [], TICK)
        if not ready:
            continue
        data = os.read(in_fd, 4096)
        if not data:
            return "input ended"
        if interactive and ESCAPE in data:
            before = data.split(ESCAPE, 1)[0]
            if before:
                console.write(before)
            return "escape"
        try:
            console.write(data)
        except ConsoleClosed:
            return "console ended"
    return "console ended"


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """The terminal in raw mode (keys as typed, no local echo), restored however it ends."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def let_go_of_stdout() -> None:
    """The reader of stdout has gone (``| head``) after taking what it wanted: not an error.
    stdout now points at /dev/null, so Python's flush at exit does not fail on the pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def stdout_bytes() -> BinaryIO:
    """Where the guest's bytes go: the real stdout's byte stream."""
    return sys.stdout.buffer
