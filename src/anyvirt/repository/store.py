"""Where a repository's objects live: any fsspec file system, written atomically.

A URL picks the file system, as fsspec does: a plain path or ``file://`` for a
local directory, ``sftp://user@host:port/path`` for an SSH server (fsspec's
paramiko file system), anything else fsspec knows (``s3://`` through s3fs,
untested here: no S3 server runs on this machine) as fsspec opens it.

Every object is written under a temporary name that carries the writer's lease
id, then renamed into place: a reader sees a whole object or none, and a
writer cut at any moment leaves only temporary names that the next backup or
prune can tell are dead (their lease is gone) and remove.

Host keys of SSH servers are checked: against ``known_hosts=`` (a file), else
``~/.ssh/known_hosts``. An unknown or changed key refuses the connection
(fsspec's default would accept any key on first use).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from attrs import frozen

from anyvirt.errors import AnyvirtError, ConnectionFailed, InvalidSpec, NotFound, StorageFull
from anyvirt.kit.ssh import known_hosts_only
from anyvirt.target import Secret

if TYPE_CHECKING:
    import fsspec
    import paramiko

TEMP = ".tmp-"  # "<name>.tmp-<lease id>": an object being written
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
SSH_TIMEOUT = 30.0


class Store:
    """The objects of one repository, by relative name ("chunks/ab/ab12...")."""

    def __init__(self, url: Secret | str, *, password: Secret | None = None,
                 key_filename: str | None = None, known_hosts: str | os.PathLike[str] | None = None,
                 timeout: float = SSH_TIMEOUT, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec  # here, not at the top: ``import anyvirt`` stays quick
        from fsspec.implementations.local import LocalFileSystem

        # the URL may carry a password: held as a Secret, so no frame here keeps its text
        held = url if isinstance(url, Secret) else Secret(url)
        del url
        where = _parse(held)
        self.url = where.safe
        # paramiko's SFTP client is not safe across threads (two requests at once deadlock):
        # remote file systems get one call at a time
        self._io: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._made: set[str] = set()
        if where.problem:
            raise InvalidSpec(f"{where.problem}: {self.url}")
        if where.scheme in ("", "file"):
            if where.scheme == "file" and where.host not in ("", "localhost"):
                raise InvalidSpec(f"a file:// repository is on this machine: {self.url}")
            if not where.path:
                raise InvalidSpec("a repository URL needs a path")
            self.fs: fsspec.AbstractFileSystem = LocalFileSystem(auto_mkdir=True)
            self.root = os.path.abspath(where.path)
            self.remote = False
        elif where.scheme in ("sftp", "ssh"):
            if not where.host or not where.path:
                raise InvalidSpec(f"an sftp repository URL is sftp://user@host[:port]/path, not {self.url}")
            if where.has_password:
                raise InvalidSpec("put no password in a repository URL: pass password=")
            policy = known_hosts_only(Path(known_hosts) if known_hosts is not None
                                      else Path.home() / ".ssh" / "known_hosts")
            self.fs = self._sftp(fsspec, where, password, key_filename, policy, timeout)
            self.root = where.path
            self.remote = True
            self._io = threading.Lock()
            # a server that stops answering fails the call instead of hanging it
            self.fs.ftp.get_channel().settimeout(timeout)
        else:
            with _translated(f"opening {self.url}"):
                self.fs, self.root = fsspec.core.url_to_fs(held.reveal(), **(storage_options or {}))
            self.remote = True
            self._io = threading.Lock()

    def _sftp(self, fsspec: Any, where: _Where, password: Secret | None, key_filename: str | None,
              policy: paramiko.MissingHostKeyPolicy, timeout: float) -> Any:
        failure = ""
        try:
            fs = fsspec.filesystem(
                "sftp", host=where.host, port=where.port or 22, username=where.user,
                key_filename=key_filename,
                password=password.reveal() if password is not None else None,
                look_for_keys=key_filename is None and password is None,
                allow_agent=key_filename is None and password is None,
                host_key_policy=policy, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout, skip_instance_cache=True)
        except Exception as exc:
            failure = f"connecting to {self.url}: {type(exc).__name__}: {exc}"
            if password is None:
                raise ConnectionFailed(failure) from exc
        if failure:
            # raised outside the handler, so not even as the context: when a password was
            # sent, paramiko's and fsspec's frames hold it in their locals
            raise ConnectionFailed(failure)
        # fsspec keeps its arguments for reconnecting; this store never reconnects (a new
        # BackupRepository does), so the password is not kept
        for kept in (fs.ssh_kwargs, fs.storage_options):
            kept.pop("password", None)
        return fs

    def __repr__(self) -> str:
        return f"Store({getattr(self, 'url', '<not opened>')!r})"

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}" if name else self.root

    def makedirs(self, name: str) -> None:
        with self._call(f"making {name} in {self.url}"):
            self.fs.makedirs(self.path(name), exist_ok=True)

    def put(self, name: str, data: bytes, tag: str) -> None:
        """Write ``data`` as ``name``, whole or not at all. ``tag`` names the writer's lease
        in the temporary name. An object already there is left as it is (content-addressed
        objects are equal by name; points and indexes have fresh names)."""
        temp = f"{name}{TEMP}{tag}"
        with self._call(f"writing {name} to {self.url}"):
            folder = self.path(name).rsplit("/", 1)[0]
            if self.remote and folder not in self._made:  # local writes make their folders
                self.fs.makedirs(folder, exist_ok=True)
                self._made.add(folder)
            try:
                self.fs.pipe_file(self.path(temp), data)
            except BaseException:
                # a full disk keeps nothing of the failed write (a lost connection cannot
                # remove it: the next backup or prune does, by its dead lease)
                with contextlib.suppress(Exception):
                    self.fs.rm_file(self.path(temp))
                raise
            try:
                self.fs.mv(self.path(temp), self.path(name))
            except OSError:
                if not self.fs.exists(self.path(name)):
                    raise
                self.fs.rm_file(self.path(temp))  # another writer put the same chunk

    def get(self, name: str) -> bytes:
        with self._call(f"reading {name} from {self.url}"):
            data: bytes = self.fs.cat_file(self.path(name))
            return data

    def exists(self, name: str) -> bool:
        with self._call(f"looking for {name} in {self.url}"):
            return bool(self.fs.exists(self.path(name)))

    def remove(self, name: str) -> None:
        with self._call(f"removing {name} from {self.url}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(name))

    def files(self, prefix: str) -> dict[str, int]:
        """Every file under the folder ``prefix``, by relative name, with its size."""
        base = self.path(prefix)
        with self._call(f"listing {prefix} in {self.url}"):
            if not self.fs.exists(base):
                return {}
            found = self.fs.find(base, detail=True)
        root = self.root.rstrip("/") + "/"
        out = {}
        for full, info in found.items():
            rel = str(full)
            if rel.startswith(root):
                rel = rel[len(root):]
            elif rel.startswith(root.lstrip("/")):  # some file systems drop the leading /
                rel = rel[len(root.lstrip("/")):]
            out[rel] = int(info.get("size") or 0)
        return out

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        with self._io, _translated(what):
            yield

    def close(self) -> None:
        client = getattr(self.fs, "client", None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """The storage's errors as anyvirt's: a full disk is StorageFull, a lost server
    ConnectionFailed, a missing object NotFound."""
    try:
        yield
    except AnyvirtError:
        raise
    except FileNotFoundError as exc:
        raise NotFound(f"{what}: not found") from exc
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise StorageFull(f"{what}: no space left ({exc.strerror})") from exc
        if exc.errno is None or isinstance(exc, (socket.error, ConnectionError)):
            raise ConnectionFailed(f"{what}: {exc}") from exc
        raise ConnectionFailed(f"{what}: {exc.strerror or exc}") from exc
    except Exception as exc:
        # paramiko's SSHException and EOFError (a cut session): checked by name, so that
        # local repositories never import paramiko
        if isinstance(exc, EOFError) or type(exc).__module__.startswith("paramiko"):
            raise ConnectionFailed(f"{what}: {exc}") from exc
        raise


@frozen
class _Where:
    scheme: str
    host: str
    port: int | None
    user: str | None
    path: str
    safe: str  # the URL without its password
    has_password: bool
    problem: str  # "" or why the URL cannot be used


def _parse(url: Secret) -> _Where:
    """The parts of a repository URL. Never raises: a frame that raises is kept by its
    traceback, and this one holds the URL's text."""
    text = url.reveal()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port, problem = None, "the port is not a number from 1 to 65535"
    else:
        problem = ""
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if port:
        netloc = f"{netloc}:{port}"
    safe = parts._replace(netloc=netloc).geturl() if parts.password is not None else text
    if scheme == "" or (len(scheme) == 1 and text[1:3] in (":\\", ":/")):  # a plain path
        return _Where("", "", None, None, text, text, False, problem)
    return _Where(scheme=scheme, host=parts.hostname or "", port=port,
                  user=unquote(parts.username) if parts.username else None,
                  path=unquote(parts.path), safe=safe, has_password=parts.password is not None,
                  problem=problem)


__all__ = ["TEMP", "Store", "known_hosts_only"]
