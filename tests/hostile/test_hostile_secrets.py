"""No password in any output: reprs, messages, log records at DEBUG on every logger, CLI
output with ``--debug``, and the locals of every frame of a failed login's tracebacks.

A private vcsim with a password full of URI-reserved characters is the server;
the password arrives from each of the six places anyvirt reads one from.
"""

from __future__ import annotations

import contextlib
import logging
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from anyvirt_vsphere.testbed.vcsim import Vcsim
from click.testing import CliRunner

import anyvirt
from anyvirt.cli.main import cli
from anyvirt.errors import AnyvirtError, AuthenticationFailed, ConnectionFailed
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
