"""``anyvirt backup --to sftp://...`` and friends against a real OpenSSH server on loopback
(the shared server of tests/sshd_support.py)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sshd_support import Sshd

import anyvirt
from anyvirt import DiskSpec, VMSpec, memory
from anyvirt.cli.exit_codes import ExitCode
from anyvirt.cli.main import cli

pytestmark = pytest.mark.skipif(
    shutil.which("/usr/sbin/sshd") is None or os.geteuid() != 0,
    reason="needs Debian's openssh-server (scripts/system-packages.sh test) and root for its "
           "private mount namespace")
MIB = 1024 * 1024


def test_backup_list_verify_and_restore_over_sftp(server: Sshd, tmp_path: Path) -> None:
    name = f"clisftp-{uuid.uuid4().hex[:8]}"
    disk = tmp_path / "d.raw"
    with open(disk, "wb") as handle:
        handle.truncate(16 * MIB)
        handle.write(os.urandom(2 * MIB))
    host = anyvirt.connect(f"memory://{name}")
    try:
        vm = host.vms.create(VMSpec(name="web1", memory_mib=64, disks=[DiskSpec(image=str(disk))]))
        ssh = ["--ssh-key", str(server.key), "--known-hosts", str(server.known_hosts)]
        url = server.url("repo")
        made = CliRunner().invoke(cli, ["--json", "backup", f"memory://{name}", "web1", "--to", url,
                                        *ssh])
        assert made.exit_code == 0, made.output + made.stderr
        point = json.loads(made.stdout)["point"]["id"]
        assert (server.served / "repo" / "points" / point).is_file()
        listed = CliRunner().invoke(cli, ["--json", "backups", url, *ssh])
        assert [p["id"] for p in json.loads(listed.stdout)] == [point]
        checked = CliRunner().invoke(cli, ["repo", "verify", url, *ssh])
        assert checked.exit_code == 0 and "ok" in checked.stdout
        back = CliRunner().invoke(cli, ["restore", url, point, "--to", f"memory://{name}",
                                        "--name", "web1-back", *ssh])
        assert back.exit_code == 0, back.output + back.stderr
        original = vm.native.contents[vm.info().disks[0].id][1].rstrip(b"\0")
        copy = host.vms.get("web1-back")
        assert copy.native.contents[copy.info().disks[0].id][1].rstrip(b"\0") == original
        # without the server's key in known_hosts: refused, nothing written
        empty = tmp_path / "known_hosts"
        empty.write_text("")
        refused = CliRunner().invoke(cli, ["backups", server.url("other"), "--ssh-key",
                                           str(server.key), "--known-hosts", str(empty)])
        assert refused.exit_code == ExitCode.CONNECTION and "host key" in refused.stderr
    finally:
        host.close()
        memory.reset(name)
