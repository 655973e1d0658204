"""SSH to a platform's own machines (a Proxmox node's storage, an SFTP repository), with
host keys checked against a known_hosts file and never trusted on first sight.

paramiko is imported inside the functions: it is slow to import, and only the
connections that ask for SSH need it.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from attrs import frozen

from anyvirt.errors import ConnectionFailed, InvalidSpec, TaskFailed

if TYPE_CHECKING:
    import paramiko

DEFAULT_PORT = 22
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?:{_LABEL}\.)*{_LABEL}$|^\[[0-9A-Fa-f:.]+\]$")


def default_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


@frozen
class SshEndpoint:
    """``user@host[:port]``: who logs in where. Checked strictly, as it becomes a login."""

    user: str
    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str, what: str = "ssh") -> SshEndpoint:
        user, at, rest = text.rpartition("@")
        if not at or not _USER.match(user):
            raise InvalidSpec(f"{what}= is user@host[:port], e.g. root@pve1 (got {text!r})")
        host, port = rest, DEFAULT_PORT
        tail = rest.rsplit("]", 1)[-1] if rest.startswith("[") else rest
        if ":" in tail:
            host, _, digits = rest.rpartition(":")
            if not digits.isdigit() or not 0 < int(digits) < 65536:
                raise InvalidSpec(f"{what}=: the port must be 1-65535 (got {digits!r})")
            port = int(digits)
        if not _HOST.match(host):
            raise InvalidSpec(f"{what}=: {host!r} is not a host name or address")
        return cls(user=user, host=host.strip("[]"), port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port != DEFAULT_PORT else "")


def known_hosts_only(path: Path) -> paramiko.MissingHostKeyPolicy:
    """A paramiko policy accepting a server only if ``path`` (a known_hosts file) lists
    its key for that host and port."""
    import paramiko

    class KnownHostsOnly(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                             key: paramiko.PKey) -> None:
            known = paramiko.HostKeys()
            if path.is_file():
                known.load(str(path))
            entry = known.lookup(hostname)
            if entry is None or key.get_name() not in entry or entry[key.get_name()] != key:
                raise paramiko.SSHException(
                    f"the host key of {hostname} is not the one {path} lists for it: add it "
                    "there (ssh-keyscan) after checking its fingerprint")

    return KnownHostsOnly()


@contextlib.contextmanager
def sftp(endpoint: SshEndpoint, *, key_filename: str | None, known_hosts: Path | None,
         timeout: float) -> Iterator[Any]:
    """An SFTP session to ``endpoint`` (paramiko's ``SFTPClient``), closed afterwards. Keys
    come from ``key_filename``, else the agent and ~/.ssh; the host key must be in
    ``known_hosts`` (default ~/.ssh/known_hosts). Any failure to get in is ConnectionFailed."""
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(known_hosts_only(known_hosts or default_known_hosts()))
    try:
        client.connect(endpoint.host, port=endpoint.port, username=endpoint.user,
                       key_filename=key_filename, look_for_keys=key_filename is None,
                       allow_agent=key_filename is None, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout)
        session = client.open_sftp()
        session.get_channel().settimeout(timeout)  # a server gone quiet fails the read
    except (OSError, paramiko.SSHException, EOFError) as exc:
        client.close()
        raise ConnectionFailed(f"connecting over SSH to {endpoint}: {type(exc).__name__}: {exc}") from exc
    try:
        yield session
    finally:
        # on a connection already lost, closing can raise too: the first error is the one
        with contextlib.suppress(Exception):
            session.close()
        client.close()


@contextlib.contextmanager
def transfer_errors(what: str) -> Iterator[None]:
    """A connection lost mid-transfer (paramiko's exceptions, an EOF, a timeout) as
    ConnectionFailed; anything else (a local disk that is full) passes as it is."""
    try:
        yield
    except (EOFError, TimeoutError) as exc:
        raise ConnectionFailed(f"{what}: the SSH connection was lost: {type(exc).__name__}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("paramiko"):
            raise ConnectionFailed(f"{what}: the SSH connection was lost: {exc}") from exc
        raise


def openssh_available() -> bool:
    return shutil.which("ssh") is not None


#: how long a stream that ended early waits for ssh's own exit status (seconds)
EXIT_GRACE = 2.0


@contextlib.contextmanager
def streamed_file(endpoint: SshEndpoint, path: str, *, key_filename: str | None,
                  known_hosts: Path | None, timeout: float) -> Iterator[IO[bytes]]:
    """A remote file's bytes as a pipe from OpenSSH's ``ssh`` running ``cat`` there: several
    times paramiko's SFTP throughput (its packets are handled in Python). The same rules as
    :func:`sftp`: no ssh_config read, the host key must be in ``known_hosts``, no prompt.
    ``path`` is quoted for the remote shell. A non-zero exit after the reader is done
    (a missing file, a refused key) is ConnectionFailed (255) or TaskFailed."""
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or default_known_hosts()}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"ConnectTimeout={max(int(timeout), 1)}",
            "-o", f"ServerAliveInterval={max(int(timeout) // 3, 1)}", "-o", "ServerAliveCountMax=3",
            "-p", str(endpoint.port), "-l", endpoint.user]
    if key_filename is not None:
        argv += ["-i", key_filename, "-o", "IdentitiesOnly=yes"]
    argv += ["--", endpoint.host, f"cat -- {shlex.quote(path)}"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    failed: BaseException | None = None
    try:
        yield proc.stdout
    except BaseException as exc:  # re-raised below, or ssh's own reason with it as the cause
        failed = exc
    if failed is not None:
        # a stream that ended early ends because ssh is exiting (a cut connection): its exit
        # status says which; only a reader that gave up on a live stream has to kill it
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=EXIT_GRACE)
    killed = failed is not None and proc.poll() is None
    if killed:
        proc.kill()  # given up midway: the rest of the stream is not wanted
    proc.stdout.close()
    error = proc.stderr.read().decode(errors="replace").strip()[-400:]
    proc.stderr.close()
    code = proc.wait()
    if code == 255:
        raise ConnectionFailed(f"connecting over SSH to {endpoint}: {error or 'ssh failed'}") from failed
    if code != 0 and not killed:
        raise TaskFailed(f"reading {path} on {endpoint}: {error or f'exit status {code}'}") from failed
    if failed is not None:
        raise failed

__all__ = ["SshEndpoint", "default_known_hosts", "known_hosts_only", "openssh_available", "sftp",
           "streamed_file", "transfer_errors"]
