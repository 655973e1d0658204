"""Each process that opens the embedded QEMU starts libvirt's QEMU driver afresh, and the driver
re-attaches to the guests already running (one reconnect thread each, querying QEMU's monitor).
Commands run one after the other from the CLI, so every command meets that reconnect.

A force stop that came while it was still under way (the README's ``vm create --start``,
``vm console | head``, ``vm stop --force``: about one run in three here) sent QEMU its SIGTERM
at once, the reconnect's next monitor command failed, libvirt stopped the guest itself
("shutting down, reason=daemon") and the stop answered "domain is not running" (exit 1).

Everything runs in subprocesses, as a user runs it: this test process never opens the embedded
driver itself (libvirt allows one embed root per process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyvirt_libvirt.embedded import prepare_embed_root

#: long enough for the stop command to start, open the driver and ask for the force stop
STOP_UNDER_WAY = 3.0


class Cli:
    """``anyvirt`` as a subprocess against one throwaway embed root."""

    def __init__(self, home: Path) -> None:
        self.root = home / "data" / "anyvirt" / "qemu-embed"
        prepare_embed_root(self.root)
        self.env = dict(os.environ, XDG_DATA_HOME=str(home / "data"),
                        XDG_CONFIG_HOME=str(home / "config"),
                        ANYVIRT_URI=f"libvirt+qemu:///embed?root={self.root}")
        self.env.pop("ANYVIRT_PROFILE", None)
        self.cwd = home

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "anyvirt.cli.main", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), env=self.env, cwd=self.cwd, capture_output=True,
                              text=True, timeout=120)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), env=self.env, cwd=self.cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def qemu_pid(self, name: str) -> int:
        return int((self.root / "run" / "qemu" / f"{name}.pid").read_text())

    def shutdown_reasons(self, name: str) -> list[str]:
        log = (self.root / "log" / "qemu" / f"{name}.log").read_text()
        return [line.rsplit("reason=", 1)[1].strip() for line in log.splitlines()
                if "shutting down, reason=" in line]


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    # a short root: QEMU's monitor socket lives under it, and a UNIX socket path has 107 bytes
    with tempfile.TemporaryDirectory(prefix="anyvirt-embed-") as home:
        runner = Cli(Path(home))
        made = runner.run("image", "demo", "demo.img")
        assert made.returncode == 0, made.stderr
        yield runner


@pytest.fixture
def running(cli: Cli, request: pytest.FixtureRequest) -> Iterator[str]:
    """A running guest of the demo image, named after the test; stopped again after it."""
    name = request.node.name.removeprefix("test_")[:40]
    created = cli.run("vm", "create", name, "--image", "demo.img", "--memory", "64", "--start")
    assert created.returncode == 0, created.stderr
    yield name
    if (cli.root / "run" / "qemu" / f"{name}.pid").exists():
        cli.run("vm", "stop", name, "--force")


def test_a_force_stop_meeting_the_drivers_reconnect_stops_the_guest_itself(
        cli: Cli, running: str) -> None:
    qemu = cli.qemu_pid(running)
    # A frozen QEMU holds the next process's reconnect at its first monitor command for as long
    # as it is frozen: the window that was milliseconds wide, made wide enough to hit every time.
    os.kill(qemu, signal.SIGSTOP)
    try:
        stop = cli.start("vm", "stop", running, "--force")
        time.sleep(STOP_UNDER_WAY)
    finally:
        os.kill(qemu, signal.SIGCONT)
    out, err = stop.communicate(timeout=120)
    assert stop.returncode == 0, err
    assert "powered off" in out
    # the stop's own power-off, not libvirt giving up on a guest it could not re-attach to
    assert cli.shutdown_reasons(running) == ["destroyed"]


def _gone_reader() -> int:
    """The write end of a pipe whose reader has already left (``| head`` after its lines)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def test_console_into_a_reader_that_left_ends_quietly_and_the_guest_runs_on(
        cli: Cli, running: str) -> None:
    qemu = cli.qemu_pid(running)
    log = cli.root / "images"
    deadline = time.monotonic() + 30
    while b"COUNT 1" not in b"".join(p.read_bytes() for p in log.glob("*.console.log")):
        assert time.monotonic() < deadline, "the demo guest never counted"
        time.sleep(0.2)
    out = _gone_reader()
    keys, typist = os.pipe()  # input that stays open: only the gone reader can end the session
    try:  # the log printed, then the live session (-i) whose bytes nobody reads
        printed = subprocess.run(cli.command("vm", "console", running), env=cli.env, stdout=out,
                                 stderr=subprocess.PIPE, text=True, timeout=60)
        attached = subprocess.Popen(cli.command("vm", "console", "-i", running), env=cli.env,
                                    stdin=keys, stdout=out, stderr=subprocess.PIPE, text=True)
        try:
            attached.wait(timeout=30)  # the guest writes a line a second: the first one ends it
        finally:
            attached.kill()
            _, attached_err = attached.communicate()
    finally:
        for fd in (out, keys, typist):
            os.close(fd)
    assert (printed.returncode, printed.stderr) == (0, "")
    assert (attached.returncode, attached_err) == (0, "")
    shown = cli.run("vm", "show", running)
    assert "running" in shown.stdout, shown.stdout + shown.stderr
    assert cli.qemu_pid(running) == qemu
