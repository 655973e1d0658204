"""VMware's vSphere API simulator (vcsim), built from Debian's govmomi source, as a test target.

Debian ships govmomi's ``simulator`` package but not the ``vcsim`` command,
so :func:`build_vcsim` compiles the small ``main`` package next to this module
(``vcsim_src/main.go``) offline in GOPATH mode, against a private copy of the
Debian source with our own fixes (``vcsim_src/*.patch``) applied; the system tree
is never touched. The binary is cached under the user's cache directory, keyed
by a hash of everything that went into it, so only the first run pays for the
build.

The patches make the simulator behave as a real server does where 0.24.2
does not: ``0001`` keeps host, pool and datastore VM lists right across
Relocate and templates, ``0002`` keeps a VM's disks when a snapshot is
removed, and ``0003`` keeps what an ``ImportVApp``/``HttpNfcLease`` upload
sends (stock vcsim discards every byte): a streamOptimized VMDK PUT to a
disk's lease URL is decoded, as a host does, into the VM's ``x.vmdk``
descriptor and ``x-flat.vmdk`` extent (zeros left as holes), any other body
is stored as sent, and a bad stream gets HTTP 500 with the old files left
as they were.

:class:`Vcsim` runs one simulator process on a kernel-chosen loopback port,
serving TLS with a certificate made for ``127.0.0.1`` so tests can prove that
verification against ``ca_file`` really works (and that the default trust
store refuses it). Everything it writes, datastore contents included, lives in
its work directory and is removed by :meth:`Vcsim.stop`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, urlencode

__all__ = [
    "APT_PACKAGES",
    "Vcsim",
    "VcsimBuildError",
    "VcsimStartError",
    "apply_unified_diff",
    "build_vcsim",
    "default_cache_dir",
]

#: Debian packages that provide the Go toolchain and the simulator source.
APT_PACKAGES = ("golang-go", "golang-github-vmware-govmomi-dev")

SYSTEM_GOPATH = Path("/usr/share/gocode")
GOVMOMI_IMPORT_PATH = "github.com/vmware/govmomi"
SOURCE_DIR = Path(__file__).with_name("vcsim_src")

_BUILD_TIMEOUT = 900.0
_URL_LINE = re.compile(r"^GOVC_URL=(?P<scheme>https?)://(?P<host>[^:/]+):(?P<port>\d+)/sdk$", re.M)


class VcsimBuildError(RuntimeError):
    """The simulator could not be built (missing packages, compiler error, bad patch)."""


class VcsimStartError(RuntimeError):
    """The simulator process did not come up; the message carries its stderr."""


# --------------------------------------------------------------------------- build


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/anyvirt/vcsim``, or ``~/.cache/anyvirt/vcsim``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anyvirt" / "vcsim"


def _missing_packages_message(what: str) -> str:
    return (
        f"cannot build vcsim: {what}. Install the Debian packages: apt-get install {' '.join(APT_PACKAGES)}"
    )


def _go_binary() -> str:
    go = shutil.which("go") or ("/usr/lib/go/bin/go" if Path("/usr/lib/go/bin/go").exists() else None)
    if go is None:
        raise VcsimBuildError(_missing_packages_message("the `go` command is not installed"))
    return go


def _govmomi_source() -> Path:
    source = SYSTEM_GOPATH / "src" / GOVMOMI_IMPORT_PATH
    if not (source / "simulator" / "model.go").is_file():
        raise VcsimBuildError(_missing_packages_message(f"the govmomi source is not in {source}"))
    return source


def _govmomi_fingerprint(source: Path) -> str:
    """Identify the installed govmomi source: the Debian package version when dpkg knows it.

    Without dpkg (another distribution laying out the same tree), the names,
    sizes and mtimes of the simulator's files stand in for a version.
    """
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", APT_PACKAGES[1]],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if version:
            return f"deb:{version}"
    digest = hashlib.sha256()
    for path in sorted((source / "simulator").rglob("*.go")):
        stat = path.stat()
        digest.update(f"{path.relative_to(source)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return f"tree:{digest.hexdigest()}"


def _patch_files(without: Collection[str] = ()) -> list[Path]:
    """Our patches, in order; ``without`` leaves out those whose names start with one of
    its entries (``"0003"``: a stock behaviour a test needs to meet)."""
    return [p for p in sorted(SOURCE_DIR.glob("*.patch"))
            if not any(p.name.startswith(prefix) for prefix in without)]


def _build_key(go: str, source: Path, without: Collection[str] = ()) -> str:
    digest = hashlib.sha256()
    main_go = SOURCE_DIR / "main.go"
    digest.update(b"main.go\0" + main_go.read_bytes() + b"\0")
    for patch in _patch_files(without):
        digest.update(patch.name.encode() + b"\0" + patch.read_bytes() + b"\0")
    digest.update(_govmomi_fingerprint(source).encode() + b"\0")
    go_version = subprocess.run(
        [go, "version"], capture_output=True, text=True, timeout=60, check=False
    ).stdout.strip()
    digest.update(go_version.encode())
    return digest.hexdigest()[:20]


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise builders (parallel pytest workers) on one cache entry."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_vcsim(cache_dir: Path | None = None, *, without_patches: Collection[str] = ()) -> Path:
    """Return the path of the vcsim binary, building it first when the cache lacks it.

    The cache key covers ``main.go``, our patches, the govmomi package
    version and the Go version, so a change to any of them rebuilds.
    """
    go = _go_binary()
    source = _govmomi_source()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = cache / _build_key(go, source, without_patches)
    binary = entry / "vcsim"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache / f"{entry.name}.lock"):
        if binary.is_file():  # another process built it while we waited
            return binary
        with tempfile.TemporaryDirectory(prefix="build-", dir=cache) as scratch:
            built = _compile(go, source, Path(scratch), without_patches)
            entry.mkdir(parents=True, exist_ok=True)
            os.replace(built, binary)  # atomic: a half-written binary is never cached
    return binary


def _compile(go: str, source: Path, scratch: Path, without: Collection[str] = ()) -> Path:
    gopath = scratch / "gopath"
    private_govmomi = gopath / "src" / GOVMOMI_IMPORT_PATH
    # A private copy shadows the system one (first GOPATH entry wins), so our
    # patches never touch /usr/share/gocode.
    shutil.copytree(source, private_govmomi, symlinks=True)
    for patch in _patch_files(without):
        try:
            apply_unified_diff(patch.read_text(), private_govmomi)
        except ValueError as exc:
            raise VcsimBuildError(f"cannot apply {patch.name} to {source}: {exc}") from exc
    command_dir = scratch / "cmd" / "vcsim"
    command_dir.mkdir(parents=True)
    shutil.copy2(SOURCE_DIR / "main.go", command_dir / "main.go")
    output = scratch / "vcsim"
    env = dict(os.environ)
    env.update(
        GO111MODULE="off",  # Debian's gocode tree is a GOPATH, not a module cache
        GOPROXY="off",  # never reach for the network
        GOFLAGS="",
        CGO_ENABLED="0",  # a static binary, no C toolchain needed
        GOPATH=f"{gopath}{os.pathsep}{SYSTEM_GOPATH}",
    )
    if "GOCACHE" not in env and "HOME" not in env:
        env["GOCACHE"] = str(scratch / "gocache")
    result = subprocess.run(
        [go, "build", "-trimpath", "-o", str(output), "."],
        cwd=command_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=_BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0 or not output.is_file():
        raise VcsimBuildError(
            f"go build of vcsim failed (exit {result.returncode}):\n{result.stderr.strip()}"
        )
    return output


_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def apply_unified_diff(diff: str, root: Path) -> None:
    """Apply a ``diff -u``/``git diff`` style patch (paths with one leading component) under root.

    Context must match exactly (no fuzz), but a hunk may have moved: it is
    searched for nearest its stated line first. Only modifications of existing
    files are supported, which is all our patches need; written here so the
    build does not depend on GNU patch being installed.
    """
    lines = diff.splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith("--- ") or index + 1 >= len(lines):
            index += 1
            continue
        target_line = lines[index + 1]
        if not target_line.startswith("+++ "):
            raise ValueError(f"line {index + 2}: expected '+++' after '---'")
        relative = target_line[4:].split("\t")[0].strip().split("/", 1)[1]
        target = root / relative
        if not target.is_file():
            raise ValueError(f"{relative}: no such file")
        text = target.read_text()
        content = text.split("\n")
        index += 2
        delta = 0
        while index < len(lines) and lines[index].startswith("@@"):
            match = _HUNK_HEADER.match(lines[index])
            if match is None:
                raise ValueError(f"line {index + 1}: bad hunk header")
            index += 1
            old: list[str] = []
            new: list[str] = []
            while index < len(lines) and lines[index][:1] in (" ", "-", "+", "\\", ""):
                if (
                    lines[index].startswith("--- ")
                    and index + 1 < len(lines)
                    and lines[index + 1].startswith("+++ ")
                ):
                    break
                line = lines[index]
                kind, body = (line[:1] or " "), line[1:]
                if kind in (" ", "-"):
                    old.append(body)
                if kind in (" ", "+"):
                    new.append(body)
                index += 1
            start = _find_hunk(content, old, int(match.group(1)) - 1 + delta)
            if start is None:
                raise ValueError(f"{relative}: hunk at line {match.group(1)} does not match")
            content[start : start + len(old)] = new
            delta += len(new) - len(old)
        target.write_text("\n".join(content))


def _find_hunk(content: list[str], old: list[str], expected: int) -> int | None:
    last = len(content) - len(old)
    for distance in range(max(expected, last - expected) + 1):
        for start in (expected - distance, expected + distance):
            if 0 <= start <= last and content[start : start + len(old)] == old:
                return start
    return None


# --------------------------------------------------------------------------- run


def _make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1, which is also its own CA."""
    cert, key = directory / "vcsim-cert.pem", directory / "vcsim-key.pem"
    openssl = shutil.which("openssl")
    if openssl is None:
        raise VcsimStartError("cannot make vcsim's TLS certificate: install the `openssl` package")
    result = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-nodes",
            "-days",
            "7",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise VcsimStartError(f"openssl could not make a certificate: {result.stderr.strip()}")
    return cert, key


class Vcsim:
    """One vcsim process: a simulated vCenter (default) or standalone ESXi host.

    Counts follow govmomi's model: ``hosts`` per cluster, ``standalone_hosts``
    and ``clusters`` per datacenter, ``pools`` child pools per cluster and
    ``vms`` per resource pool (the root pools included) and per standalone
    host. In ESX mode only ``vms`` and ``datastores`` apply.

    Every VM gets about five small files in the datastore: for models of
    thousands of VMs, a ``workdir`` on tmpfs (``/dev/shm``) starts several
    times faster than one on a disk filesystem.
    """

    def __init__(
        self,
        *,
        esx: bool = False,
        datacenters: int = 1,
        clusters: int = 1,
        hosts: int = 3,
        standalone_hosts: int = 1,
        pools: int = 1,
        vms: int = 2,
        datastores: int = 1,
        username: str = "user",
        password: str = "pass",  # noqa: S107 - a throwaway simulator login, by design
        tls: bool = True,
        workdir: Path | None = None,
        port: int = 0,
        cache_dir: Path | None = None,
        without_patches: Collection[str] = (),
    ) -> None:
        self.without_patches = tuple(without_patches)
        self.esx = esx
        self.datacenters = datacenters
        self.clusters = clusters
        self.cluster_hosts = hosts
        self.standalone_hosts = standalone_hosts
        self.pools = pools
        self.vms = vms
        self.datastores = datastores
        self.username = username
        self.password = password
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = port
        self.ca_file: Path | None = None
        self.datastore_dir: Path | None = None
        self.startup_seconds: float | None = None
        self._requested_workdir = Path(workdir) if workdir is not None else None
        self._cache_dir = cache_dir
        self._rundir: Path | None = None
        self._owns_rundir = False
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Vcsim {'esx' if self.esx else 'vpx'} {self.host}:{self.port} {state}>"

    # ---- addresses

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def sdk_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/sdk"

    @property
    def anyvirt_uri(self) -> str:
        """The anyvirt URI, TLS verification off; never contains the password.

        With ``tls=False`` the scheme gets an ``+http`` transport
        (``vsphere+http://``), the only way to say "plain HTTP" in a URI.
        """
        return self._uri("verify=false")

    @property
    def anyvirt_uri_with_ca(self) -> str:
        """The anyvirt URI trusting our certificate through ``?ca=``."""
        if self.ca_file is None:
            raise VcsimStartError("no CA file: the simulator is not running with TLS")
        return self._uri("ca=" + quote(str(self.ca_file), safe="/"))

    def _uri(self, query: str) -> str:
        scheme = "esxi" if self.esx else "vsphere"
        if not self.tls:
            scheme += "+http"
        return f"{scheme}://{quote(self.username, safe='')}@{self.host}:{self.port}?{query}"

    @property
    def expected_vm_count(self) -> int:
        """How many VMs the model starts with (govmomi puts ``vms`` in every
        cluster's root pool and on every standalone host, none in child pools)."""
        if self.esx:
            return self.vms
        return self.datacenters * (self.clusters + self.standalone_hosts) * self.vms

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # ---- lifecycle

    def command(self, binary: Path) -> list[str]:
        args = [str(binary), "-l", f"{self.host}:{self.port}"]
        if self.esx:
            args.append("-esx")
        else:
            args += [
                "-dc",
                str(self.datacenters),
                "-cluster",
                str(self.clusters),
                "-host",
                str(self.cluster_hosts),
                "-standalone-host",
                str(self.standalone_hosts),
                "-pool",
                str(self.pools),
            ]
        args += ["-vm", str(self.vms), "-ds", str(self.datastores)]
        args += ["-username", self.username, "-password", self.password]
        # Our end of its stdin closes when this process dies, however it
        # dies: no simulator outlives a killed test run.
        args.append("-exit-on-stdin-eof")
        return args

    def start(self, timeout: float = 20.0) -> Vcsim:
        """Build if needed, start, and return once the SDK answers."""
        if self.running:
            raise VcsimStartError("vcsim is already running")
        binary = build_vcsim(self._cache_dir, without_patches=self.without_patches)
        began = time.monotonic()
        rundir = self._make_rundir()
        self.datastore_dir = rundir / "datastores"
        self.datastore_dir.mkdir()
        args = self.command(binary)
        if self.tls:
            cert, key = _make_certificate(rundir)
            self.ca_file = cert
            args += ["-tlscert", str(cert), "-tlskey", str(key)]
        else:
            self.ca_file = None
            args.append("-plain")
        env = dict(os.environ)
        env["TMPDIR"] = str(self.datastore_dir)  # where the simulator puts datastore files
        stdout_path, stderr_path = rundir / "vcsim.out", rundir / "vcsim.err"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=rundir,
                start_new_session=True,  # a terminal Ctrl-C reaches us, and stop() ends it
            )
        try:
            self._wait_for_url(stdout_path, stderr_path, began + timeout)
            self._wait_for_sdk(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _make_rundir(self) -> Path:
        if self._requested_workdir is None:
            self._rundir = Path(tempfile.mkdtemp(prefix="anyvirt-vcsim-"))
        else:
            self._requested_workdir.mkdir(parents=True, exist_ok=True)
            self._rundir = Path(tempfile.mkdtemp(prefix="vcsim-", dir=self._requested_workdir))
        self._owns_rundir = True
        return self._rundir

    def _wait_for_url(self, stdout_path: Path, stderr_path: Path, deadline: float) -> None:
        assert self._process is not None
        while True:
            match = _URL_LINE.search(stdout_path.read_text(errors="replace"))
            if match is not None:
                self.host, self.port = match["host"], int(match["port"])
                return
            if self._process.poll() is not None:
                raise VcsimStartError(
                    f"vcsim exited with status {self._process.returncode}: "
                    f"{stderr_path.read_text(errors='replace').strip()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise VcsimStartError("vcsim did not print its URL in time")
            time.sleep(0.02)

    def _wait_for_sdk(self, deadline: float) -> None:
        """Ask the cheapest SDK page until it answers 200."""
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            connection = self._http_connection(timeout=max(0.5, deadline - time.monotonic()))
            try:
                connection.request("GET", "/sdk/vimServiceVersions.xml")
                if connection.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException) as exc:
                last_error = exc
            finally:
                connection.close()
            time.sleep(0.05)
        raise VcsimStartError(f"vcsim's SDK did not answer in time: {last_error}")

    def _http_connection(self, timeout: float) -> http.client.HTTPConnection:
        if not self.tls:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this simulator's certificate."""
        if self.ca_file is None:
            raise VcsimStartError("no CA file: the simulator is not running with TLS")
        return ssl.create_default_context(cafile=str(self.ca_file))

    def set_host_state(self, host_moid: str, connection: str = "notResponding",
                       power: str = "unknown") -> None:
        """The STAND-IN host failure (patch 0005; vcsim 0.24.2 cannot disconnect a host):
        host ``host_moid`` reports ``runtime.connectionState`` ``connection`` and
        ``runtime.powerState`` ``power``, and its VMs are disconnected while it does not
        answer. ``set_host_state(moid, "connected", "poweredOn")`` brings it back."""
        body = urlencode({"host": host_moid, "connection": connection, "power": power})
        connection_ = self._http_connection(timeout=10)
        try:
            connection_.request("POST", "/anyvirt/host-state", body=body,
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
            response = connection_.getresponse()
            answer = response.read().decode(errors="replace").strip()
        finally:
            connection_.close()
        if response.status != 204:
            raise VcsimStartError(f"vcsim refused the host state ({response.status}): {answer}")

    def kill(self) -> None:
        """SIGKILL the simulator (a dead server); its port then refuses connections."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()

    def stop(self) -> None:
        """SIGTERM (the simulator removes its datastores), SIGKILL after 5 s; remove our files."""
        self._close_stdin()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._rundir is not None and self._owns_rundir:
            shutil.rmtree(self._rundir, ignore_errors=True)
        self._rundir = None
        self._owns_rundir = False

    def __enter__(self) -> Vcsim:
        return self.start() if not self.running else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
