"""No password in any output: reprs, messages, log records at DEBUG on every logger, CLI
output with ``--debug``, and the locals of every frame of a failed login's tracebacks.

A private vcsim with a password full of URI-reserved characters is the server;
the password arrives from each of the six places anyvirt reads one from.

Then the same for every backend (``LOGINS``) and every way a credential can be given
(``SOURCES_OF``): a login fails against the real testbed (vcsim, fakepve, an unreachable
libvirtd, a missing VBoxManage), and every frame of the traceback (and each one's callers),
every exception of the chain with its args and attributes, every local (into containers,
attrs objects and ``__dict__``), every log record at DEBUG, and the reprs of the Host, its
driver and its target, are searched for the secret. A new backend joins by one ``Login``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import pytest
from anyvirt_proxmox.testbed.fakepve import FakePveTestbed
from anyvirt_vsphere.testbed.vcsim import Vcsim
from click.testing import CliRunner

import anyvirt
from anyvirt.cli.main import cli
from anyvirt.errors import AnyvirtError, AuthenticationFailed, ConnectionFailed, InvalidSpec, NotSupported
from anyvirt.target import Secret

PASSWORD = "Zq9/Spring#?@%:PW-right"
WRONG = "Wr0ng/#?@%:PW-wrong"
USER = "admin"


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with Vcsim(esx=True, vms=1, username=USER, password=PASSWORD,
               workdir=tmp_path_factory.mktemp("vcsim-secrets")) as sim:
        yield sim


def _base(sim: Vcsim) -> str:
    return f"esxi://{USER}@{sim.host}:{sim.port}?ca={quote(str(sim.ca_file), safe='/')}"


@contextlib.contextmanager
def everything_at_debug() -> Iterator[list[logging.LogRecord]]:
    """Every logger (anyvirt's, libvirt's, pyVmomi's, urllib3's, http's, the root) at DEBUG,
    every record kept."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    names = ["", "anyvirt", "anyvirt_vsphere", "anyvirt_libvirt", "libvirt", "pyVmomi",
             "pyVmomi.SoapAdapter", "urllib3", "urllib3.connectionpool", "http.client", "requests",
             *logging.root.manager.loggerDict]
    saved = {n: logging.getLogger(n).level for n in names}
    root = logging.getLogger()
    root.addHandler(handler)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _holds(value: Any, secret: str, depth: int = 3, seen: set[int] | None = None) -> bool:
    """Whether ``value`` shows ``secret`` in its repr or str, or holds it within ``depth``
    levels of containers and attributes."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return False
    seen.add(id(value))
    if isinstance(value, str | bytes):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return secret in text
    with contextlib.suppress(Exception):
        if secret in repr(value) or secret in str(value):
            return True
    if depth == 0 or isinstance(value, types.ModuleType | type | types.FunctionType):
        return False
    children: list[Any] = []
    if isinstance(value, dict):
        children = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple | set | frozenset):
        children = list(value)
    else:
        with contextlib.suppress(Exception):
            children = list(vars(value).values())
    return any(_holds(child, secret, depth - 1, seen) for child in children)


def _errors(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        pending += [item.__cause__, item.__context__]


def _frames_holding(error: BaseException, secret: str) -> list[str]:
    """The frames (outside this test file) of every traceback in the chain whose locals
    hold ``secret``."""
    found = []
    for item in _errors(error):
        tb = item.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename != __file__:
                for name, value in frame.f_locals.items():
                    if _holds(value, secret):
                        found.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name} {name}")
            tb = tb.tb_next
    return found


def _assert_nowhere(secret: str, error: BaseException, records: list[logging.LogRecord],
                    captured: str) -> None:
    for item in _errors(error):
        assert secret not in str(item) and secret not in repr(item)
        assert not any(secret in note for note in getattr(item, "__notes__", []))
    assert _frames_holding(error, secret) == []
    assert _frames_holding(error, quote(secret, safe="")) == []  # as the URI carried it
    for record in records:
        assert secret not in record.getMessage(), record.name
    assert secret not in captured


SOURCES = ["keyword", "keyword-secret", "uri", "uri-query", "environment", "profile"]


def _connect_with(source: str, sim: Vcsim, password: str, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    base = _base(sim)
    encoded = quote(password, safe="")
    if source == "keyword":
        anyvirt.connect(base, password=password).close()
    elif source == "keyword-secret":
        anyvirt.connect(base, password=Secret(password)).close()
    elif source == "uri":
        anyvirt.connect(base.replace(f"{USER}@", f"{USER}:{encoded}@")).close()
    elif source == "uri-query":
        anyvirt.connect(f"{base}&password={encoded}").close()
    elif source == "environment":
        monkeypatch.setenv("ANYVIRT_PASSWORD", password)
        anyvirt.connect(base).close()
    else:
        config = tmp_path / "config.toml"
        config.write_text(f'[profiles.lab]\nuri = "{base}"\npassword = "{password}"\n')
        monkeypatch.setenv("ANYVIRT_CONFIG", str(config))
        anyvirt.connect(profile="lab").close()


@pytest.mark.parametrize("source", SOURCES)
def test_the_right_password_with_reserved_characters_logs_in_from_every_source(
        vcsim: Vcsim, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    with everything_at_debug() as records:
        _connect_with(source, vcsim, PASSWORD, tmp_path, monkeypatch)
    out, err = capfd.readouterr()
    assert records  # DEBUG really was on
    for record in records:
        assert PASSWORD not in record.getMessage()
    assert PASSWORD not in out + err


@pytest.mark.parametrize("source", SOURCES)
def test_a_refused_login_shows_the_password_nowhere(
        vcsim: Vcsim, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    with everything_at_debug() as records, pytest.raises(AuthenticationFailed) as caught:
        _connect_with(source, vcsim, WRONG, tmp_path, monkeypatch)
    out, err = capfd.readouterr()
    _assert_nowhere(WRONG, caught.value, records, out + err)


def test_a_login_cut_off_by_the_network_keeps_no_frame_with_the_password(
        vcsim: Vcsim, monkeypatch: pytest.MonkeyPatch) -> None:
    """The transport error path of the login: pyVmomi's frames under it hold the password."""
    from anyvirt_vsphere.sdk import SoapStubAdapter

    real = SoapStubAdapter.InvokeMethod

    def cut_at_login(self: Any, mo: Any, info: Any, args: Any, *rest: Any) -> Any:
        if info.name == "Login":
            raise ConnectionResetError("connection reset by peer")
        return real(self, mo, info, args, *rest)

    monkeypatch.setattr(SoapStubAdapter, "InvokeMethod", cut_at_login)
    with everything_at_debug() as records, pytest.raises(ConnectionFailed) as caught:
        anyvirt.connect(_base(vcsim), password=Secret(PASSWORD))
    _assert_nowhere(PASSWORD, caught.value, records, "")


def test_without_the_fix_pyvmomi_frames_would_hold_the_password(vcsim: Vcsim) -> None:
    """The check above can fail: the raw SDK error of the same login does hold it."""
    from anyvirt_vsphere.sdk import SoapStubAdapter, vim

    stub = SoapStubAdapter(host=vcsim.host, port=vcsim.port, path="/sdk",
                           version="vim.version.version11", sslContext=_ssl(vcsim))
    content = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
    try:
        content.sessionManager.Login(USER, WRONG, None)
    except vim.fault.InvalidLogin as exc:
        assert _frames_holding(exc, WRONG)
    else:
        pytest.fail("the simulator took a wrong password")


def _ssl(sim: Vcsim) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(sim.ca_file))


@pytest.mark.parametrize("source", ["uri", "environment"])
def test_cli_debug_output_never_shows_the_password(vcsim: Vcsim, source: str) -> None:
    encoded = quote(WRONG, safe="")
    base = _base(vcsim)
    if source == "uri":
        result = CliRunner().invoke(cli, ["--debug", "info", base.replace(f"{USER}@", f"{USER}:{encoded}@")])
    else:
        result = CliRunner().invoke(cli, ["--debug", "--password-env", "SECRET_PW", "info", base],
                                    env={"SECRET_PW": WRONG})
    assert result.exit_code != 0
    assert WRONG not in result.output
    assert encoded not in result.output


def test_cli_refuses_an_unencoded_password_without_showing_it() -> None:
    with everything_at_debug() as records:
        result = CliRunner().invoke(cli, ["--debug", "info", "vsphere://admin:2024/Spring!PW@vc.invalid"])
    assert result.exit_code != 0
    assert "percent-encode" in result.output
    assert "Spring" not in result.output
    assert not any("Spring" in r.getMessage() for r in records)


def test_libvirt_with_a_password_logs_nothing_of_it(capfd: pytest.CaptureFixture[str]) -> None:
    """libvirt's own logger and its error handler at DEBUG, for a refused connection."""
    with everything_at_debug() as records, pytest.raises(AnyvirtError) as caught:
        anyvirt.connect(f"libvirt+qemu+tcp://{USER}:{quote(WRONG, safe='')}@127.0.0.1:1/system",
                        timeout=5)
    out, err = capfd.readouterr()
    _assert_nowhere(WRONG, caught.value, records, out + err)


# ---------------------------------------------------------------- every backend, every way in
@attrs.frozen
class Login:
    """How to fail a login on one backend: ``base`` makes its URI (no credential in it) from
    the test's fixtures; ``kinds`` are the credentials it takes: ``password``, ``token``
    (anyvirt's ``token=``) and ``token_value`` (a backend's own secret option)."""

    name: str
    base: Callable[[pytest.FixtureRequest], str]
    kinds: tuple[str, ...] = ("password",)
    userinfo: bool = True  # whether the URI has a user part a password can join
    fails: bool = True
    #: a backend that logs nobody in (memory://) refuses a credential given to it, but not
    #: one only in the ambient ``$ANYVIRT_*`` environment
    never_logs_in: bool = False

    def refuses(self, source: str) -> bool:
        return self.fails or (self.never_logs_in and source != "environment")


def _vcenter(request: pytest.FixtureRequest) -> str:
    sim: Vcsim = request.getfixturevalue("vcsim_vcenter")
    return sim.anyvirt_uri_with_ca


def _esxi(request: pytest.FixtureRequest) -> str:
    return _base(request.getfixturevalue("vcsim"))


def _pve(request: pytest.FixtureRequest) -> str:
    bed: FakePveTestbed = request.getfixturevalue("proxmox_testbed")
    return bed.uri


LOGINS = (
    Login("vsphere", _vcenter),
    Login("esxi", _esxi),
    Login("proxmox", _pve, kinds=("password", "token", "token_value")),
    Login("libvirt-tcp", lambda _r: f"libvirt+qemu+tcp://{USER}@127.0.0.1:1/system?timeout=5"),
    Login("libvirt-ssh", lambda _r: f"libvirt+qemu+ssh://{USER}@127.0.0.1:1/system?no_tty=1&timeout=5"),
    Login("virtualbox", lambda _r: "virtualbox:///nonexistent/VBoxManage", userinfo=False,
          never_logs_in=True),
    Login("memory", lambda _r: "memory://hostile-secrets", kinds=("password", "token"),
          userinfo=False, fails=False, never_logs_in=True),
)

#: every way anyvirt reads each kind of credential
SOURCES_OF = {
    "password": ("keyword", "keyword-secret", "uri-userinfo", "uri-query", "environment", "profile",
                 "profile-env"),
    "token": ("keyword", "keyword-secret", "uri-query", "environment", "profile", "profile-env"),
    "token_value": ("keyword", "keyword-secret", "uri-query"),
}
TOKEN_NAME = "anyvirt"


def _cases() -> Iterator[Any]:
    for login in LOGINS:
        for kind in login.kinds:
            for source in SOURCES_OF[kind]:
                if source == "uri-userinfo" and not login.userinfo:
                    continue
                yield pytest.param(login, kind, source, id=f"{login.name}-{kind}-{source}")


def _join(uri: str, query: str) -> str:
    return f"{uri}&{query}" if "?" in uri else f"{uri}?{query}"


def _give(login: Login, kind: str, source: str, secret: str, request: pytest.FixtureRequest,
          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str | None, dict[str, Any]]:
    """The URI and keyword arguments that carry ``secret`` as ``kind`` from ``source``
    (setting the environment and writing the profile as that needs)."""
    uri = login.base(request)
    if kind == "token" and login.name == "proxmox":
        secret = f"{USER_PVE}!{TOKEN_NAME}={secret}"  # PVE's whole form
    extra: dict[str, Any] = {"token_name": TOKEN_NAME} if kind == "token_value" else {}
    encoded = quote(secret, safe="")
    if source == "keyword":
        return uri, {**extra, kind: secret}
    if source == "keyword-secret":
        return uri, {**extra, kind: Secret(secret)}
    if source == "uri-userinfo":
        return uri.replace("@", f":{encoded}@", 1), extra
    if source == "uri-query":
        return _join(uri, f"{kind}={encoded}"), extra
    if source == "environment":
        monkeypatch.setenv(f"ANYVIRT_{kind.upper()}", secret)
        return uri, extra
    config = tmp_path / "config.toml"
    value = f'{kind}_env = "HOSTILE_SECRET"' if source == "profile-env" else f"{kind} = {_toml(secret)}"
    config.write_text(f"[profiles.lab]\nuri = {_toml(uri)}\n{value}\n", encoding="utf-8")
    monkeypatch.setenv("HOSTILE_SECRET", secret)
    monkeypatch.setenv("ANYVIRT_CONFIG", str(config))
    return None, {**extra, "profile": "lab"}


USER_PVE = "root@pam"


def _toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SKIP = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.CodeType,
         types.FrameType, types.TracebackType, types.MethodType)
_MAX_CHILDREN = 400


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    found: list[Any] = []
    if isinstance(value, BaseException):
        found += [*value.args, *getattr(value, "__notes__", [])]
    with contextlib.suppress(TypeError):
        found += list(vars(value).values())
    for klass in type(value).__mro__:
        for slot in getattr(klass, "__slots__", ()):
            with contextlib.suppress(AttributeError, TypeError):
                found.append(getattr(value, slot))
    return found


def _where(value: Any, secret: str, depth: int, seen: set[int], path: str) -> str | None:
    """The path to ``secret`` within ``value`` (its repr and str, its containers, attributes,
    slots and exception args, ``depth`` levels down), or None. A Secret is where a secret
    belongs; the process environment is where the user put it (and the test's monkeypatch
    keeps a reference to it)."""
    if id(value) in seen or isinstance(value, Secret | pytest.MonkeyPatch) or value is os.environ:
        return None
    seen.add(id(value))
    if isinstance(value, str | bytes | bytearray):
        text = bytes(value).decode("utf-8", "replace") if not isinstance(value, str) else value
        return path if secret in text else None
    if isinstance(value, (int | float | bool | type(None), *_SKIP)):
        return None
    if not isinstance(value, dict | list | tuple | set | frozenset):  # those: item by item
        with contextlib.suppress(Exception):
            if secret in repr(value) or secret in str(value):
                return f"{path} (repr)"
    if depth == 0:
        return None
    for child in _children(value)[:_MAX_CHILDREN]:
        found = _where(child, secret, depth - 1, seen, f"{path}/{type(child).__name__}")
        if found:
            return found
    return None


def _frames(error: BaseException) -> Iterator[types.FrameType]:
    """Every frame of every traceback in the chain, and each one's callers."""
    seen: set[int] = set()
    for item in _errors(error):
        tb = item.__traceback__
        while tb is not None:
            frame: types.FrameType | None = tb.tb_frame
            while frame is not None and id(frame) not in seen:
                seen.add(id(frame))
                yield frame
                frame = frame.f_back
            tb = tb.tb_next


def _leaks(error: BaseException, secrets: tuple[str, ...], outside: str = __file__) -> list[str]:
    found = []
    for secret in secrets:
        for item in _errors(error):
            where = _where(item, secret, 4, set(), type(item).__name__)
            if where:
                found.append(f"exception {where}")
        for frame in _frames(error):
            if frame.f_code.co_filename == outside:
                continue  # the test's own frames hold what it gave
            seen: set[int] = set()
            for name, value in frame.f_locals.items():
                where = _where(value, secret, 4, seen, name)
                if where:
                    found.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name} {where}")
    return found


def _shown(secret: str) -> tuple[str, ...]:
    return (secret, quote(secret, safe=""))


@pytest.mark.parametrize(("login", "kind", "source"), list(_cases()))
def test_a_failed_login_keeps_the_secret_nowhere(
        login: Login, kind: str, source: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    secret = WRONG
    uri, kwargs = _give(login, kind, source, secret, request, tmp_path, monkeypatch)
    host = None
    with everything_at_debug() as records:
        try:
            host = anyvirt.connect(uri, **kwargs)
        except AnyvirtError as exc:
            assert login.refuses(source), f"{login.name} refused: {exc}"
            leaks = _leaks(exc, _shown(secret))
            assert leaks == [], "the secret is in:\n  " + "\n  ".join(leaks)
            for item in _errors(exc):
                assert secret not in str(item) and secret not in repr(item)
        else:
            assert not login.refuses(source), f"{login.name} took a wrong {kind}"
            driver = host.driver
            target = getattr(driver, "target", None)
            for shown in (host, driver, target):
                for text in (repr(shown), str(shown)):
                    assert not any(s in text for s in _shown(secret)), text
            host.close()
    out, err = capfd.readouterr()
    # a credential refused before the connection is tried leaves nothing to log
    assert records or (login.never_logs_in and source != "environment"), "DEBUG really was on"
    for record in records:
        assert not any(s in record.getMessage() for s in _shown(secret)), record.name
    assert secret not in out + err


def _right_password(login: Login, request: pytest.FixtureRequest) -> str:
    """The testbeds' passwords: ours (full of URI-reserved characters) and fakepve's random
    one. (The shared vCenter's is a word too common to search output for.)"""
    if login.name == "esxi":
        return PASSWORD
    return str(request.getfixturevalue("proxmox_testbed").password)


@pytest.mark.parametrize(("login", "kind", "source"), [
    case for case in _cases()
    if case.values[0].name in ("esxi", "proxmox") and case.values[1] == "password"])
def test_a_connected_host_shows_the_password_nowhere(
        login: Login, kind: str, source: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """The reprs and strs of the Host, its driver and its target, and every log record of the
    login and a listing, with the right password from every source."""
    secret = _right_password(login, request)
    uri, kwargs = _give(login, kind, source, secret, request, tmp_path, monkeypatch)
    with everything_at_debug() as records, anyvirt.connect(uri, **kwargs) as host:
        host.vms.list()
        target = host.driver.target  # type: ignore[attr-defined]
        shown = [repr(host), str(host), repr(host.driver), str(host.driver), repr(target),
                 str(target), target.safe_uri, host.uri]
    out, err = capfd.readouterr()
    for text in [*shown, *(r.getMessage() for r in records), out + err]:
        assert not any(s in text for s in _shown(secret)), text


def test_the_frame_walk_finds_a_secret_where_one_is() -> None:
    """The walk above can fail: a plain-text secret in an attrs object's slot, under a
    dict, in a frame's caller, is found."""

    @attrs.frozen
    class Holder:
        options: dict[str, Any]

    def login(holder: Holder) -> None:
        raise ValueError("refused")

    def connect(token_value: str) -> None:
        holder = Holder({"token_value": token_value})
        login(holder)

    with pytest.raises(ValueError, match="refused") as caught:
        connect(WRONG)
    leaks = _leaks(caught.value, _shown(WRONG), outside="")
    assert any(":login holder" in leak for leak in leaks), leaks
    assert any(":connect token_value" in leak for leak in leaks), leaks


# ---------------------------------------------------------------- identity builds
#: a sha512-crypt hash: not a credential anyvirt logs in with, but one a user's guests trust
HASH = ("$6$DuM2dErhbRcRo9fz$ktJUM6f.5fTIXP6YBtkNSXZT7qMAgXbmqCMTTKtO4uORubvipLJG8WmddXsjQA1zkaz"
        "ySiprtlWH2aO.1zGIm/")


def _identity_build_fails(uri: str, identity: anyvirt.Identity, error: type[AnyvirtError],
                          password: str) -> AnyvirtError:
    with anyvirt.connect(uri, password=password) as host, pytest.raises(error) as caught:
        host.vms.create(anyvirt.VMSpec(name=f"secret-{os.getpid()}", cpus=1, memory_mib=64,
                                       identity=identity))
    return caught.value


def test_a_proxmox_identity_that_fails_being_built_keeps_the_hash_in_no_frame(
        proxmox_testbed: FakePveTestbed) -> None:
    """PVE's request is compiled (``cipassword`` in it), then refused before it is sent: a
    user without sudo needs a snippet. Every frame of that traceback and its callers (the
    compiled request, the identity, the driver's and the gate's locals) is searched."""
    identity = anyvirt.Identity(users=[anyvirt.User("ops", sudo=False, password_hash=HASH)])
    error = _identity_build_fails(proxmox_testbed.uri, identity, NotSupported,
                                  password=proxmox_testbed.password)
    assert "sudo" in str(error)
    leaks = _leaks(error, (HASH,))
    assert leaks == [], "the hash is in:\n  " + "\n  ".join(leaks)


def test_a_vsphere_identity_that_fails_being_built_keeps_the_hash_in_no_frame(
        vcsim: Vcsim) -> None:
    """The guestinfo values are compiled (the user-data with the hash), then refused: the
    user-data passes vSphere's 64 KiB limit once encoded."""
    noise = "".join(f"{os.urandom(48).hex()}\n" for _ in range(1500))  # incompressible
    user_data = "#cloud-config\nwrite_files:\n- path: /noise\n  content: |\n" + "".join(
        f"    {line}\n" for line in noise.splitlines())
    identity = anyvirt.Identity(users=[anyvirt.User("ops", sudo=True, password_hash=HASH)],
                                user_data=user_data)
    error = _identity_build_fails(_base(vcsim), identity, InvalidSpec, password=PASSWORD)
    assert "64" in str(error) or "limit" in str(error)
    leaks = _leaks(error, (HASH,))
    assert leaks == [], "the hash is in:\n  " + "\n  ".join(leaks)
