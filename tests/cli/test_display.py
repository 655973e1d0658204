"""Issue 24 item 9: what the CLI draws on a terminal. Terminal cases run the command in a
pseudo-terminal, as a user at one sees it."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import anyvirt
from anyvirt import DiskSpec, PowerState, VMSpec, memory
from anyvirt.cli.main import cli


@pytest.fixture
def uri() -> Iterator[str]:
    name = f"display-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    memory.reset(name)


def in_a_terminal(script: str, columns: int = 80, timeout: float = 120.0) -> bytes:
    """What ``script`` writes to a terminal ``columns`` wide (stdout and stderr both)."""
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdin=subprocess.DEVNULL,
                            stdout=child, stderr=child, env=env)
    os.close(child)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(main)
    return out


def test_the_waiting_notice_gets_its_own_line_above_the_bar() -> None:
    out = in_a_terminal("""
        import anyvirt
        from anyvirt.cli.waiting import Notice, wait_for
        host = anyvirt.connect("memory://notice?latency=1.5")
        vm = host.vms.create(anyvirt.VMSpec(name="web1"))
        wait_for("start web1", lambda cb: vm.start(wait=False, on_progress=cb), timeout=60,
                 json_mode=False, notice=Notice(0.5, "web1: waiting for the guest"))
    """)
    at = out.find(b"web1: waiting for the guest")
    assert at > 0, out
    before, after = out[:at], out[at + len(b"web1: waiting for the guest"):]
    assert b"%" in before, "no bar was drawn first: the case is not tested"
    # the bar's line was cleared for it (or a line ended), and the notice ends its own line
    assert before.endswith((b"\x1b[2K", b"\n")), before[-80:]
    assert after.startswith((b"\r\n", b"\n")), after[:40]


def test_a_one_mib_disk_is_not_zero_gib(uri: str) -> None:
    anyvirt.connect(uri).vms.create(VMSpec(name="tiny", disks=[DiskSpec(size_gib=1 / 1024)]))
    shown = CliRunner().invoke(cli, ["--format", "plain", "vm", "show", uri, "tiny"])
    assert shown.exit_code == 0, shown.output
    assert "1.0 MiB" in shown.stdout and "0.00 GiB" not in shown.stdout


def test_paths_are_whole_on_an_80_column_terminal() -> None:
    out = in_a_terminal("""
        import anyvirt
        from anyvirt.cli.main import main
        host = anyvirt.connect("memory://paths-on-a-terminal")
        host.vms.create(anyvirt.VMSpec(name="a-vm-with-a-rather-long-name-for-its-disk-path",
                                       disks=[anyvirt.DiskSpec(size_gib=1)]))
        main(["vm", "show", "memory://paths-on-a-terminal",
              "a-vm-with-a-rather-long-name-for-its-disk-path"])
    """, columns=80)
    text = out.decode("utf-8", "replace")
    assert "…" not in text, text
    # the path, whole however the table folds it: its start, and its end (the disk id)
    flat = "".join(ch for ch in text if ch.isalnum() or ch in "-/:")
    assert "memory://paths-on-a-terminal/" in flat.replace("│", "")
    assert flat.count("disk0") >= 2, text  # the disk id, and the end of its path


def test_state_names_the_platform_word_once() -> None:
    from anyvirt.cli.output import state_text  # new with this fix

    assert state_text(PowerState.RUNNING, "running (booted)").plain == "running (booted)"
    assert state_text(PowerState.RUNNING, "running").plain == "running"
    assert state_text(PowerState.RUNNING, "poweredOn").plain == "running (poweredOn)"
    assert state_text(PowerState.SUSPENDED, "shut off (saved)").plain == "suspended (shut off (saved))"


def test_vm_show_state_on_a_real_libvirt() -> None:
    shown = CliRunner().invoke(cli, ["--format", "plain", "vm", "show", "libvirt+test:///default",
                                     "test"])
    assert shown.exit_code == 0, shown.output
    state_line = next(line for line in shown.stdout.splitlines() if line.startswith("state"))
    assert state_line.split() == ["state", "running"]


@pytest.mark.parametrize("words", [["events", "memory://follow"],
                                   ["vms", "memory://follow", "--watch"]])
def test_ctrl_c_ends_a_following_command_quietly_with_130(words: list[str]) -> None:
    script = (f"import sys; from anyvirt.cli.main import main; sys.stderr.write('ready\\n'); "
              f"sys.stderr.flush(); main({json.dumps(words)})")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a runner in the background ignores SIGINT
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    assert proc.stderr.readline() == "ready\n"
    time.sleep(2.0)  # connected and following
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "error" not in err and "Traceback" not in err, err


def test_ctrl_c_ends_console_follow_quietly_with_130() -> None:
    """On a real VM's console log (the embedded QEMU, in a process of its own: libvirt opens
    the embedded driver once per process)."""
    # a short root: QEMU's monitor socket lives under it, and socket paths are short
    root = Path(tempfile.mkdtemp(prefix="av-follow-", dir="/tmp"))
    script = textwrap.dedent(f"""
        import sys
        import anyvirt
        from anyvirt.cli.main import main
        uri = "libvirt+qemu:///embed?root={root}"
        host = anyvirt.connect(uri)
        vm = host.vms.create(anyvirt.VMSpec(name="follow-me", memory_mib=64))
        try:
            vm.start()
            sys.stderr.write("ready\\n")
            sys.stderr.flush()
            main(["vm", "console", uri, "follow-me", "-f"])
        finally:
            vm.stop(force=True)
            vm.delete()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first == "ready\n", first + proc.communicate(timeout=120)[1]
        time.sleep(3.0)  # connected and following
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 130, err
    assert "error" not in err and "Traceback" not in err, err
