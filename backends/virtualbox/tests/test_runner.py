"""The VBoxManage runner's own rules: timeouts kill, stalled reads are asked again, writes never.

The "VBoxManage" here is a tiny script that behaves as the case needs (hangs, or
stalls on its first call): the rules under test are the runner's, not VirtualBox's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from anyvirt_virtualbox import runner
from anyvirt_virtualbox.runner import VBoxManage, find_vboxmanage, is_read, socket_id_for

from anyvirt.errors import ConnectionFailed, Timeout


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_a_hung_call_is_killed_after_its_timeout(tmp_path: Path) -> None:
    hang = VBoxManage(script(tmp_path / "VBoxManage", "sleep 30\n"))
    start = time.monotonic()
    with pytest.raises(Timeout, match="killed"):
        hang.run(["modifyvm", "x", "--cpus", "2"], "changing CPUs", timeout=0.5)
    assert time.monotonic() - start < 5


def test_a_stalled_read_is_asked_again_but_a_write_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "called-once"
    # stalls on its first call only, like VirtualBox's IPC now and then
    binary = script(tmp_path / "VBoxManage",
                    f'if [ ! -e "{marker}" ]; then touch "{marker}"; sleep 30; fi\necho answered\n')
    monkeypatch.setattr(runner, "READ_STALL_AFTER", 0.5)
    vbox = VBoxManage(binary, timeout=20)
    assert vbox.run(["list", "vms"], "listing").stdout.strip() == "answered"
    assert (vbox.stalls, vbox.processes) == (1, 2)
    marker.unlink()
    with pytest.raises(Timeout):
        vbox.run(["createvm", "--name", "x"], "creating", timeout=1.5)
    assert vbox.processes == 3  # never repeated


def test_reads_and_environment(tmp_path: Path) -> None:
    assert is_read(["list", "vms"]) and is_read(["showvminfo", "x", "--machinereadable"])
    assert is_read(["snapshot", "x", "list", "--machinereadable"])
    assert not is_read(["snapshot", "x", "take", "list"]) and not is_read(["controlvm", "x", "poweroff"])
    env = VBoxManage("/bin/true", home=str(tmp_path)).env()
    assert env["VBOX_USER_HOME"] == str(tmp_path)
    assert env["VBOX_IPC_SOCKETID"] == socket_id_for(str(tmp_path)) != socket_id_for("/elsewhere")
    assert env["LC_ALL"] == "C.UTF-8"


def test_a_missing_vboxmanage_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(runner, "USUAL_PATHS", (str(tmp_path / "nowhere"),))
    with pytest.raises(ConnectionFailed, match="VBoxManage was not found"):
        find_vboxmanage()
    with pytest.raises(ConnectionFailed, match="not an executable"):
        find_vboxmanage(str(tmp_path / "nope"))
