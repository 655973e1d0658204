"""The kit's SSH pieces against a real OpenSSH server on loopback (``sshd_support``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_support import Sshd, sshd

from anyvirt.errors import ConnectionFailed, InvalidSpec, TaskFailed
from anyvirt.kit import ssh

pytestmark = pytest.mark.skipif(
    shutil.which("/usr/sbin/sshd") is None or shutil.which("ssh") is None or os.geteuid() != 0,
    reason="needs Debian's openssh-server and -client (scripts/system-packages.sh test) and root "
           "for sshd's private mount namespace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with sshd(tmp_path_factory.mktemp("kit-ssh")) as running:
        yield running


def endpoint(server: Sshd) -> ssh.SshEndpoint:
    return ssh.SshEndpoint("root", "127.0.0.1", server.port)


def test_a_path_is_data_for_the_remote_shell(server: Sshd, tmp_path: Path) -> None:
    odd = server.served / "disk $(touch PWNED); 'x' `id`.raw"
    odd.write_bytes(b"guest bytes" * 1000)
    with ssh.streamed_file(endpoint(server), str(odd), key_filename=str(server.key),
                           known_hosts=server.known_hosts, timeout=20) as pipe:
        assert pipe.read() == b"guest bytes" * 1000
    assert not list(Path("/").glob("PWNED")) and not (Path.home() / "PWNED").exists()


def test_a_missing_file_is_task_failed(server: Sshd) -> None:
    with pytest.raises(TaskFailed, match="No such file"), ssh.streamed_file(
            endpoint(server), str(server.served / "absent"), key_filename=str(server.key),
            known_hosts=server.known_hosts, timeout=20) as pipe:
        pipe.read()


def test_an_unknown_host_key_is_refused_by_both_clients(server: Sshd, tmp_path: Path) -> None:
    (server.served / "f").write_bytes(b"x")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(ConnectionFailed, match="Host key verification failed"), ssh.streamed_file(
            endpoint(server), str(server.served / "f"), key_filename=str(server.key), known_hosts=empty,
            timeout=20) as pipe:
        pipe.read()
    with pytest.raises(ConnectionFailed, match="host key"), ssh.sftp(
            endpoint(server), key_filename=str(server.key), known_hosts=empty, timeout=20):
        pass


@pytest.mark.parametrize("text", ["pve1", "root@", "root@-oProxyCommand=x", "root@pve1:0",
                                  "-l root@pve1", "root@pve 1"])
def test_endpoints_are_checked(text: str) -> None:
    with pytest.raises(InvalidSpec):
        ssh.SshEndpoint.parse(text)
