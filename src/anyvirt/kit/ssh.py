"""SSH to a platform's own machines (a Proxmox node's storage, an SFTP repository), with
host keys checked against a known_hosts file and never trusted on first sight.

paramiko is imported inside the functions: it is slow to import, and only the
connections that ask for SSH need it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
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


def _ssh_argv(endpoint: SshEndpoint, *, key_filename: str | None, known_hosts: Path | None,
              timeout: float) -> list[str]:
    """OpenSSH's client with the rules of :func:`sftp`: no ssh_config read, the host key
    must be in ``known_hosts``, no prompt, a quiet server fails the connection."""
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or default_known_hosts()}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"ConnectTimeout={max(int(timeout), 1)}",
            "-o", f"ServerAliveInterval={max(int(timeout) // 3, 1)}", "-o", "ServerAliveCountMax=3",
            "-p", str(endpoint.port), "-l", endpoint.user]
    if key_filename is not None:
        argv += ["-i", key_filename, "-o", "IdentitiesOnly=yes"]
    return argv


@contextlib.contextmanager
def streamed_file(endpoint: SshEndpoint, path: str, *, key_filename: str | None,
                  known_hosts: Path | None, timeout: float) -> Iterator[IO[bytes]]:
    """A remote file's bytes as a pipe from OpenSSH's ``ssh`` running ``cat`` there: several
    times paramiko's SFTP throughput (its packets are handled in Python). The same rules as
    :func:`sftp`: no ssh_config read, the host key must be in ``known_hosts``, no prompt.
    ``path`` is quoted for the remote shell. A non-zero exit after the reader is done
    (a missing file, a refused key) is ConnectionFailed (255) or TaskFailed."""
    argv = [*_ssh_argv(endpoint, key_filename=key_filename, known_hosts=known_hosts,
                       timeout=timeout), "--", endpoint.host, f"cat -- {shlex.quote(path)}"]
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


# ------------------------------------------------------------------ ranged reads
#: a UNIX socket's path must fit in sun_path (108 bytes, 104 on some systems), with the
#: 17 characters OpenSSH appends while it sets the socket up: a longer temp dir falls back to /tmp
SOCKET_PATH_MAX = 104 - 17
#: the SFTP requests of one window go out together, in pieces of this size
SFTP_PIECE = 1024 * 1024


def _classify(code: int, error: bytes, endpoint: SshEndpoint, what: str) -> None:
    """OpenSSH's exit status as our errors: 255 is ssh's own failure (the link), any other
    non-zero one is the remote command's."""
    text = error.decode(errors="replace").strip()[-400:]
    if code == 255:
        raise ConnectionFailed(f"{what}: the SSH connection to {endpoint} was lost or refused: "
                               f"{text or 'ssh failed'}")
    if code != 0:
        raise TaskFailed(f"{what} on {endpoint}: {text or f'exit status {code}'}")


class _RemoteRange:
    """One ranged read running on the node (a :class:`anyvirt.kit.windowed_reads.Window`)."""

    def __init__(self, proc: subprocess.Popen[bytes], endpoint: SshEndpoint, what: str) -> None:
        self.proc, self.endpoint, self.what = proc, endpoint, what

    def read(self, size: int, /) -> bytes:
        assert self.proc.stdout is not None
        chunk = self.proc.stdout.read(size)
        if not chunk:  # ended early: ssh's exit status says whether the link went
            self._ended()
        return chunk

    def finish(self) -> None:
        self._ended()

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # the rest of the range is not wanted
        self._close()

    def _ended(self) -> None:
        code = self.proc.wait()
        error = self._close()
        _classify(code, error, self.endpoint, self.what)

    def _close(self) -> bytes:
        """The pipes closed (once: an ended window is aborted again when its reader closes)
        and what ssh said on stderr."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        error = b"" if self.proc.stderr.closed else self.proc.stderr.read()
        self.proc.stderr.close()
        self.proc.wait()
        return error


@frozen
class Multiplexed:
    """One OpenSSH login to a machine that many short commands ride on, none paying a
    handshake: the ControlMaster's socket lives in a private (0700) temp dir for as long
    as :func:`multiplexed` lasts. A master that is gone (a cut link) fails every command
    with ConnectionFailed: nothing logs in again behind the caller's back."""

    endpoint: SshEndpoint
    client: list[str]  # ssh's argv up to the host, riding on the master
    master: subprocess.Popen[bytes]
    timeout: float

    def _argv(self, command: str) -> list[str]:
        if self.master.poll() is not None:
            raise ConnectionFailed(f"the SSH connection to {self.endpoint} was lost")
        return [*self.client, "--", self.endpoint.host, command]

    def run(self, command: str, what: str) -> bytes:
        """``command`` (already quoted for the remote shell) run there: its output."""
        try:
            done = subprocess.run(self._argv(command), stdin=subprocess.DEVNULL,
                                  capture_output=True, check=False, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise ConnectionFailed(f"{what}: no answer over SSH from {self.endpoint} "
                                   f"in {self.timeout:g} s") from exc
        _classify(done.returncode, done.stderr, self.endpoint, what)
        return done.stdout

    def read_range(self, path: str, offset: int, length: int, what: str) -> _RemoteRange:
        """``length`` bytes of the node's file (or block device) ``path`` from ``offset``,
        as a window: GNU dd with byte offsets there, the path quoted for the remote shell."""
        command = (f"dd if={shlex.quote(path)} bs=1M skip={int(offset)} count={int(length)} "
                   "iflag=skip_bytes,count_bytes status=none")
        proc = subprocess.Popen(self._argv(command), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return _RemoteRange(proc, self.endpoint, what)


def _control_dir() -> str:
    """Where the master's socket goes: the temp dir, unless its path is too long for one."""
    where = tempfile.gettempdir()
    # mkdtemp makes a private (0700) directory under /tmp as under any other
    fits = len(where) + len("/anyvirt-ssh-xxxxxxxx/m") < SOCKET_PATH_MAX
    return where if fits else "/tmp"  # noqa: S108


@contextlib.contextmanager
def multiplexed(endpoint: SshEndpoint, *, key_filename: str | None, known_hosts: Path | None,
                timeout: float) -> Iterator[Multiplexed]:
    """A logged-in OpenSSH ControlMaster to ``endpoint`` (the rules of :func:`sftp`: the host
    key must be in ``known_hosts``), stopped and its socket gone afterwards. A failed login
    is ConnectionFailed."""
    base = _ssh_argv(endpoint, key_filename=key_filename, known_hosts=known_hosts, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="anyvirt-ssh-", dir=_control_dir()) as private:
        os.chmod(private, 0o700)  # mkdtemp's mode already; said here because it matters
        control = Path(private) / "m"
        # the master's messages go to a file: a pipe nobody reads would stall it once full
        log = (Path(private) / "log").open("w+b")
        master = subprocess.Popen(
            [*base, "-N", "-o", "ControlMaster=yes", "-o", f"ControlPath={control}",
             "-o", "ControlPersist=no", "--", endpoint.host],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            # the socket appears once the login succeeded
            deadline = time.monotonic() + timeout + EXIT_GRACE
            while not control.exists():
                if master.poll() is not None or time.monotonic() > deadline:
                    master.kill()
                    master.wait()
                    log.seek(0)
                    why = log.read().decode(errors="replace").strip()[-400:]
                    raise ConnectionFailed(f"connecting over SSH to {endpoint}: "
                                           f"{why or 'no login in time'}")
                time.sleep(0.02)
            yield Multiplexed(endpoint=endpoint, master=master, timeout=timeout, client=[
                *base, "-o", "ControlMaster=no", "-o", f"ControlPath={control}"])
        finally:
            if master.poll() is None:
                master.terminate()
            try:
                master.wait(EXIT_GRACE)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait()
            log.close()


class _SftpRange:
    """One ranged read of a file over SFTP (a :class:`anyvirt.kit.windowed_reads.Window`):
    its own handle, the requests of the whole range sent at once (``readv``)."""

    def __init__(self, session: Any, path: str, offset: int, length: int, what: str) -> None:
        self.session, self.what = session, what
        with self._errors():
            self.handle = session.open(path, "rb")
            pieces = [(at, min(SFTP_PIECE, offset + length - at))
                      for at in range(offset, offset + length, SFTP_PIECE)]
            self.pieces = iter(self.handle.readv(pieces))
        self.buffer = b""

    def read(self, size: int, /) -> bytes:
        with self._errors():
            while len(self.buffer) < size:
                piece = next(self.pieces, None)
                if not piece:
                    break
                self.buffer += piece
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def finish(self) -> None:
        with self._errors():
            self.handle.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """:func:`transfer_errors`, and an OSError on a session whose channel is closed (paramiko's
        "Socket is closed") as the lost connection it is; one on a live session (a file the
        node does not have) is the file's."""
        try:
            with transfer_errors(self.what):
                yield
        except OSError as exc:
            if self.session.get_channel().closed:
                raise ConnectionFailed(f"{self.what}: the SSH connection was lost: {exc}") from exc
            raise

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # a lost link: the read's own error is the one
            self.handle.close()


def sftp_window(session: Any, path: str, offset: int, length: int, what: str) -> _SftpRange:
    """``length`` bytes of ``path`` from ``offset`` over an open :func:`sftp` session, as a
    window (where this machine has no OpenSSH client)."""
    return _SftpRange(session, path, offset, length, what)



__all__ = ["Multiplexed", "SshEndpoint", "default_known_hosts", "known_hosts_only", "multiplexed",
           "openssh_available", "sftp", "sftp_window", "streamed_file", "transfer_errors"]
