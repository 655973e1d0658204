"""A real OpenSSH server on loopback: for the sftp:// repository tests, and as the stand-in
for a Proxmox node's SSH in the Proxmox backend's tests (which put tests/ on their path).

Its own host key, an authorized key made for the test, its own config and a
free port; nothing of the machine's SSH setup is read or changed. Debian's
sshd insists on its privilege separation directory /run/sshd, so it runs in a
private mount namespace with a small tmpfs over /run: the directory exists for
it alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from attrs import frozen

SSHD = "/usr/sbin/sshd"


@frozen
class Sshd:
    pid: int
    port: int
    key: Path  # the client's private key
    known_hosts: Path
    served: Path  # a directory for repositories (or what stands for a node's storage)

    def url(self, name: str) -> str:
        return f"sftp://root@127.0.0.1:{self.port}{self.served / name}"

    def sessions(self) -> list[int]:
        """The processes serving connections now (children of the listener)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                        found.append(int(entry))
        return found

    def cut(self) -> int:
        """kill -9 every session: the client's connection dies mid-request."""
        sessions = self.sessions()
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(sessions)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@contextlib.contextmanager
def sshd(where: Path) -> Iterator[Sshd]:
    where.mkdir(parents=True, exist_ok=True)
    _keygen(where / "host_key")
    _keygen(where / "client_key")
    (where / "authorized_keys").write_text((where / "client_key.pub").read_text())
    port = _free_port()
    config = where / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {where / 'host_key'}",
        f"PidFile {where / 'sshd.pid'}", f"AuthorizedKeysFile {where / 'authorized_keys'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "Subsystem sftp internal-sftp", "MaxStartups 100", "",
    ]))
    host_key = (where / "host_key.pub").read_text().split()
    known = where / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    served = where / "served"
    served.mkdir()
    script = ("mount -t tmpfs -o size=1m,mode=755 tmpfs /run && mkdir -m 755 /run/sshd && "
              f'exec {SSHD} -D -e -f "$1"')
    log = open(where / "sshd.log", "wb")  # noqa: SIM115 - open for the server's lifetime
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                             "sh", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(where / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield Sshd(pid=proc.pid, port=port, key=where / "client_key", known_hosts=known,
                   served=served)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
