"""Running ``VBoxManage``: argument lists only, a timeout on every call, typed errors.

Every command is ``[VBoxManage, *args]`` with no shell, so a VM name is one
argument whatever it holds. A call that outlives its timeout is killed with
its whole process group. ``LC_ALL=C.UTF-8`` keeps the human-format listings English (and non-ASCII
arguments intact: under plain ``C`` VBoxManage refuses them, VERR_NO_TRANSLATION).
A session-lock clash (another VBoxManage holds the machine for a moment) is
retried briefly; a read that stalls is asked again once (see ``_read_once``);
nothing else is repeated, since most commands change things.

``home`` (the ``?home=`` URI option) selects a VirtualBox configuration
directory (``VBOX_USER_HOME``). One VBoxSVC serves one such directory, and a
second one started for another directory would otherwise be answered by the
first (VBoxSVC is found through a per-user socket), so a named home also gets
its own ``VBOX_IPC_SOCKETID``.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from anyvirt.errors import AnyvirtError, ConnectionFailed, InvalidSpec, Timeout
from anyvirt_virtualbox.errors import parse_error, to_anyvirt
from anyvirt_virtualbox.machinereadable import split_driver_warning

#: where VirtualBox installs VBoxManage when it is not on PATH
USUAL_PATHS = (
    "/usr/bin/VBoxManage",
    "/usr/local/bin/VBoxManage",
    "/usr/lib/virtualbox/VBoxManage",
    "/opt/VirtualBox/VBoxManage",
    "/Applications/VirtualBox.app/Contents/MacOS/VBoxManage",
    r"C:\Program Files\Oracle\VirtualBox\VBoxManage.exe",
)
DEFAULT_TIMEOUT = 120.0
LOCK_RETRIES = 8
LOCK_RETRY_DELAY = 0.2  # seconds, growing, with jitter so that clashing callers spread out


READ_STALL_AFTER = 4.0  # seconds; an answer usually takes 0.05-0.3 s
_READS = frozenset({"list", "showvminfo", "showmediuminfo", "--version", "-v"})


def is_read(args: Sequence[str]) -> bool:
    """Commands that change nothing, so can be repeated (``snapshot X list`` too)."""
    if not args:
        return False
    return args[0] in _READS or (args[0] == "snapshot" and len(args) > 2 and args[2] == "list")


def find_vboxmanage(explicit: str | None = None) -> str:
    """The VBoxManage to run: ``explicit``, else the one on PATH, else a usual install path."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ConnectionFailed(f"VBoxManage {explicit!r} is not an executable file")
        return explicit
    for name in ("VBoxManage", "vboxmanage"):
        found = shutil.which(name)
        if found:
            return found
    for path in USUAL_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ConnectionFailed(
        "VBoxManage was not found on PATH or in the usual install paths "
        f"({', '.join(USUAL_PATHS[:4])}, ...): install VirtualBox, or name it as "
        "virtualbox:///path/to/VBoxManage"
    )


def socket_id_for(home: str) -> str:
    """A VBoxSVC socket id of this home directory's own (short: it goes into a socket path)."""
    return "anyvirt-" + hashlib.sha256(os.path.abspath(home).encode()).hexdigest()[:12]


@attrs.frozen
class Output:
    stdout: str  # without the kernel-driver warning
    stderr: str
    driver_warning: str = ""


@attrs.define
class VBoxManage:
    """One VBoxManage binary with one configuration directory."""

    binary: str
    home: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    processes: int = 0  # how many VBoxManage processes this connection started
    stalls: int = 0  # reads asked again after a stall

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", LANGUAGE="C")
        if self.home:
            env["VBOX_USER_HOME"] = self.home
            env["VBOX_IPC_SOCKETID"] = socket_id_for(self.home)
        return env

    def run(
        self, args: Sequence[str], what: str, *, timeout: float | None = None, check: bool = True
    ) -> Output:
        """Run ``VBoxManage *args``; a failure raises the anyvirt error for it."""
        for attempt in range(LOCK_RETRIES + 1):
            code, out = (
                self._read_once(args, what, timeout) if is_read(args) else self._once(args, what, timeout)
            )
            if code == 0 or not check:
                return out
            error = parse_error(out.stderr)
            if error is not None and error.locked and attempt < LOCK_RETRIES:
                time.sleep(LOCK_RETRY_DELAY * (attempt + 1) * (0.5 + random.random()))
                continue
            raise self.failure(code, out, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def failure(self, code: int, out: Output, what: str) -> AnyvirtError:
        error = parse_error(out.stderr)
        if error is not None:
            return to_anyvirt(error, what)
        if code == 2:  # VBoxManage's exit code for a syntax error
            return InvalidSpec(f"{what}: VBoxManage refused the arguments: {_tail(out.stderr)}")
        return AnyvirtError(f"{what}: VBoxManage exited with {code}: {_tail(out.stderr or out.stdout)}")

    def _read_once(self, args: Sequence[str], what: str, timeout: float | None) -> tuple[int, Output]:
        """A read, asked again once if it stalls: VirtualBox 7.2 makes about one call in a hundred
        wait 10 s in its XPCOM IPC before answering (measured on the testbed, chroot or not). A
        read is safe to repeat, so one that passes READ_STALL_AFTER is killed and run again
        with the whole timeout."""
        limit = self.timeout if timeout is None else timeout
        if limit <= READ_STALL_AFTER * 2:
            return self._once(args, what, timeout)
        try:
            return self._once(args, what, READ_STALL_AFTER)
        except Timeout:
            self.stalls += 1
            return self._once(args, what, limit - READ_STALL_AFTER)

    def _once(self, args: Sequence[str], what: str, timeout: float | None) -> tuple[int, Output]:
        limit = self.timeout if timeout is None else timeout
        argv = [self.binary, *args]
        self.processes += 1
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env(),
                start_new_session=True,
            )
        except OSError as exc:
            raise ConnectionFailed(f"cannot run VBoxManage {self.binary!r}: {exc.strerror}") from exc
        try:
            raw_out, raw_err = proc.communicate(timeout=max(limit, 0.1))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise Timeout(
                f"{what}: VBoxManage {args[0] if args else ''} did not finish within "
                f"{limit:g} s and was killed"
            ) from None
        stdout = raw_out.decode("utf-8", "replace")
        warning, stdout = split_driver_warning(stdout)
        return proc.returncode, Output(
            stdout=stdout, stderr=raw_err.decode("utf-8", "replace"), driver_warning=warning
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def default_home() -> Path:
    """Where VirtualBox keeps its configuration when ``VBOX_USER_HOME`` is not set."""
    env = os.environ.get("VBOX_USER_HOME")
    if env:
        return Path(env)
    home = Path.home()
    for candidate in (home / ".config" / "VirtualBox", home / ".VirtualBox", home / "Library" / "VirtualBox"):
        if (candidate / "VirtualBox.xml").is_file():
            return candidate
    return home / ".config" / "VirtualBox"
