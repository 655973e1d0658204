"""VirtualBox testbeds: the real VirtualBox 7.2 in a Debian sid chroot, and the fake VBoxManage.

**The real one.** Debian 12 has no VirtualBox, but Debian sid's ``contrib`` has
7.2. :func:`build_chroot` runs ``build-chroot.sh`` (next to this module) as
root: ``debootstrap`` of sid into the cache (``~/.cache/anyvirt/virtualbox``,
never a shared work dir), ``virtualbox`` installed in it, and a ``VBoxManage``
wrapper that enters the chroot in a private mount namespace with ``/proc``,
``/sys``, ``/dev``, ``/tmp`` and ``/var/tmp`` bound in, so paths mean the same
on both sides. Built once (about a minute), then reused. Everything offline is
real; no VM can run (no ``vboxdrv`` kernel module here).

**The fake** (:mod:`anyvirt_virtualbox.testbed.fake`) stands in only where a
guest must run: start, ACPI stop, pause, savestate, live snapshots. It keeps
its state in a JSON file, takes VBoxManage's argument syntax and prints 7.2's
formats; the tests hold it to the real output.

**A full VirtualBox** (a host with the kernel driver): set
``ANYVIRT_VIRTUALBOX_VBOXMANAGE=/usr/bin/VBoxManage`` and run the tests marked
``virtualbox_full`` (``pytest -m virtualbox_full``).

Each test gets its own :class:`Home`: a ``VBOX_USER_HOME`` (with a VBoxSVC of
its own) and machine folder, so no VM leaks between tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import attrs

from anyvirt.testbeds import RunningTestbed, Testbed, TestbedOption

__all__ = [
    "BUILD_SCRIPT",
    "FULL_VIRTUALBOX_ENV",
    "TESTBED",
    "Home",
    "TestbedBuildError",
    "VirtualBoxTestbed",
    "build_chroot",
    "default_cache_dir",
    "fake_vboxmanage",
    "home_at",
    "make_home",
    "served_home",
    "serving",
]

BUILD_SCRIPT = Path(__file__).with_name("build-chroot.sh")
FULL_VIRTUALBOX_ENV = "ANYVIRT_VIRTUALBOX_VBOXMANAGE"
_BUILD_TIMEOUT = 1800.0


class TestbedBuildError(RuntimeError):
    """The chroot could not be built (not root, no debootstrap, no mirror, apt failed)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/anyvirt/virtualbox``, or ``~/.cache/anyvirt/virtualbox``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anyvirt" / "virtualbox"


def build_chroot(cache_dir: Path | None = None) -> Path:
    """Build (first time) or reuse the sid chroot; returns its ``VBoxManage`` wrapper."""
    cache = cache_dir or default_cache_dir()
    wrapper = cache / "bin" / "VBoxManage"
    try:  # the script itself returns at once when the cached build is complete and current
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), str(cache)],
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TestbedBuildError(f"building the VirtualBox chroot took over {_BUILD_TIMEOUT:g} s") from exc
    if done.returncode != 0:
        raise TestbedBuildError(f"building the VirtualBox chroot failed: {done.stderr.strip()[-2000:]}")
    return wrapper


def fake_vboxmanage(directory: Path) -> Path:
    """Write an executable ``VBoxManage`` in ``directory`` that runs the fake (no shell involved)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "VBoxManage"
    # isolated (-I) and without site (-S): the fake needs only the standard library and
    # starts in a fraction of the time, which matters at hundreds of calls per test run
    fake = Path(__file__).with_name("fake.py")
    path.write_text(
        f"#!{sys.executable} -IS\n"
        "# anyvirt's fake VBoxManage: running states only, held to VirtualBox 7.2's formats\n"
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('anyvirt_fake_vboxmanage', {str(fake)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "sys.exit(module.main(sys.argv[1:]))\n"
    )
    path.chmod(0o755)
    return path


@attrs.frozen
class Home:
    """One VirtualBox configuration directory and machine folder, for one test or one user."""

    vboxmanage: Path
    path: Path
    machine_folder: Path

    @property
    def uri(self) -> str:
        return f"virtualbox://{quote(str(self.vboxmanage))}?home={quote(str(self.path), safe='/')}"

    def env(self) -> dict[str, str]:
        from anyvirt_virtualbox.runner import socket_id_for

        return {
            **os.environ,
            "VBOX_USER_HOME": str(self.path),
            "VBOX_IPC_SOCKETID": socket_id_for(str(self.path)),
            "LC_ALL": "C.UTF-8",
        }

    def prepare(self) -> None:
        """Point VirtualBox's machine folder at this home's (retried briefly: a VBoxSVC that
        was just started may not answer its first client yet)."""
        for attempt in range(5):
            done = self.run("setproperty", "machinefolder", str(self.machine_folder), check=False)
            if done.returncode == 0:
                return
            time.sleep(0.3 * (attempt + 1))
        raise TestbedBuildError(f"VirtualBox refused its machine folder: {done.stderr.strip()[-500:]}")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run this home's VBoxManage directly (tests read results back with it)."""
        return subprocess.run(
            [str(self.vboxmanage), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=300,
            check=check,
        )


SERVICE_SHUTDOWN_DELAY_MS = 60_000


@contextlib.contextmanager
def serving(home: Home) -> Iterator[subprocess.Popen[bytes] | None]:
    """Keep one VBoxSVC running for ``home`` while the block runs (where the testbed has one).

    VBoxManage starts VBoxSVC on demand and VBoxSVC exits 5 s after its last
    client; a VBoxManage that arrives while it is exiting waits 10 s before
    starting a new one (measured on 7.2: a dozen such stalls in a test run). A
    service started here, with a 60 s shutdown delay, never races that way; it
    is stopped when the block ends, and exits by itself a minute after its last
    client if this process dies first.
    """
    service = home.vboxmanage.with_name("VBoxSVC")
    if not os.access(service, os.X_OK):
        yield None
        return
    env = home.env()
    proc = subprocess.Popen(
        [str(service), "--auto-shutdown", "--shutdown-delay", str(SERVICE_SHUTDOWN_DELAY_MS)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # where VirtualBox's XPCOM puts the socket of a VBoxSVC (fixed by VirtualBox, not ours to choose)
    socket = Path(f"/tmp/.vbox-{env['VBOX_IPC_SOCKETID']}-ipc/ipcd")  # noqa: S108
    deadline = time.monotonic() + 10.0
    while not socket.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def home_at(vboxmanage: Path, base: Path) -> Home:
    """A new, empty home under ``base`` (call ``prepare()`` before using it)."""
    home = Home(vboxmanage=vboxmanage, path=base / "home", machine_folder=base / "machines")
    home.path.mkdir(parents=True, exist_ok=True)
    home.machine_folder.mkdir(parents=True, exist_ok=True)
    return home


def make_home(vboxmanage: Path, base: Path) -> Home:
    """A fresh home under ``base`` whose new VMs go to ``base/machines``."""
    home = home_at(vboxmanage, base)
    home.prepare()
    return home


@contextlib.contextmanager
def served_home(vboxmanage: Path, base: Path) -> Iterator[Home]:
    """A fresh home under ``base``, prepared, with one VBoxSVC of its own (``serving``) while
    the block runs: the home every test of a real VirtualBox starts from, in one place."""
    home = home_at(vboxmanage, base)
    with serving(home):
        home.prepare()
        yield home


class VirtualBoxTestbed:
    """``anyvirt testbed virtualbox [--fake]``: a fresh VirtualBox home on the real 7.2 (or the fake).

    Prints the URI; on Ctrl-C the home and every VM made in it are removed.
    """

    summary = (
        "The real VirtualBox 7.2 in a Debian sid chroot (built once: about a minute, as root; "
        "no guest can run) or, with --fake, the fake VBoxManage for running states."
    )
    options = (TestbedOption("fake", "The fake VBoxManage (running states) instead of the real one.", False),)

    def start(self, fake: bool = False) -> RunningTestbed:
        base = Path(tempfile.mkdtemp(prefix="anyvirt-vbox-"))
        stack = contextlib.ExitStack()
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        try:
            binary = fake_vboxmanage(base / "bin") if fake else build_chroot()
            home = home_at(binary, base)
            stack.enter_context(serving(home))
            home.prepare()
        except (OSError, subprocess.SubprocessError) as exc:
            stack.close()
            raise TestbedBuildError(f"the VirtualBox home could not be made: {exc}") from exc
        except BaseException:
            stack.close()
            raise
        return RunningTestbed(uris=(home.uri,), stop=stack.close)


TESTBED: Testbed = VirtualBoxTestbed()
