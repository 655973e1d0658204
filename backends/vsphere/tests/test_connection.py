"""Connecting: TLS verified by default, credentials, re-login, logout, dead servers."""

from __future__ import annotations

import io
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from anyvirt_vsphere.datastore_files import download, upload
from anyvirt_vsphere.driver import VSphereDriver
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt
from anyvirt.errors import AuthenticationFailed, ConnectionFailed, InvalidSpec
from anyvirt.model import PowerState


def _plain_uri(sim: Vcsim) -> str:
    """The URI without verify=false or ca=: TLS verification as by default."""
    scheme = "esxi" if sim.anyvirt_uri.startswith("esxi") else "vsphere"
    return f"{scheme}://{sim.username}@{sim.host}:{sim.port}"


def test_self_signed_certificate_is_refused_with_a_way_out(vcsim: Vcsim) -> None:
    with pytest.raises(ConnectionFailed) as err:
        anyvirt.connect(_plain_uri(vcsim), password=vcsim.password)
    message = str(err.value)
    assert "not trusted" in message
    assert "?ca=" in message and "verify=false" in message
    assert vcsim.password not in message


def test_its_ca_or_verify_false_is_trusted(vcsim: Vcsim) -> None:
    assert vcsim.ca_file is not None
    with anyvirt.connect(_plain_uri(vcsim), password=vcsim.password, ca=str(vcsim.ca_file)) as host:
        assert host.backend == "vsphere"
    with anyvirt.connect(vcsim.anyvirt_uri, password=vcsim.password) as host:
        assert host.vms.list()


def test_wrong_password_is_authentication_failed(vcsim: Vcsim) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        anyvirt.connect(vcsim.anyvirt_uri_with_ca, password="not-" + vcsim.password)
    assert "not-" not in str(err.value)


def test_unknown_option_is_refused(vcsim: Vcsim) -> None:
    with pytest.raises(InvalidSpec, match="no URI option 'colour'; did you mean 'cluster'"):
        anyvirt.connect(vcsim.anyvirt_uri_with_ca + "&colour=blue", password=vcsim.password)


def test_an_unreadable_ca_bundle_or_unknown_transport_is_invalid_spec(vcsim: Vcsim, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="CA bundle"):
        anyvirt.connect(_plain_uri(vcsim) + f"?ca={tmp_path}/missing.pem", password=vcsim.password)
    scheme, rest = _plain_uri(vcsim).split("://")
    with pytest.raises(InvalidSpec, match="unknown transport 'ftp'"):
        anyvirt.connect(f"{scheme}+ftp://{rest}", password=vcsim.password)


def test_plain_http_simulator(tmp_path: Path) -> None:
    """``Vcsim(tls=False)`` gives a ``vsphere+http://`` URI: SOAP and datastore files over HTTP."""
    with Vcsim(tls=False, vms=1, standalone_hosts=0, hosts=1, workdir=tmp_path) as sim:
        assert sim.anyvirt_uri.startswith("vsphere+http://")
        with anyvirt.connect(sim.anyvirt_uri, password=sim.password) as host:
            assert [vm.name for vm in host.vms.list()] == ["DC0_C0_RP0_VM0"]
            upload(host, "LocalDS_0", "plain/hello.bin", io.BytesIO(b"over http"), size=9)
            out = tmp_path / "hello.bin"
            download(host, "LocalDS_0", "plain/hello.bin", out)
            assert out.read_bytes() == b"over http"


def test_unreachable_server_is_connection_failed() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionFailed):
        anyvirt.connect(f"vsphere://user@127.0.0.1:{port}?verify=false&timeout=2", password="x")
    assert time.monotonic() - started < 5


def test_killed_and_hung_servers_fail_fast(tmp_path: Path) -> None:
    with Vcsim(esx=True, vms=1, workdir=tmp_path) as sim:
        hung = anyvirt.connect(sim.anyvirt_uri_with_ca + "&timeout=1", password=sim.password)
        assert hung.vms.list()
        assert sim.pid is not None
        os.kill(sim.pid, signal.SIGSTOP)  # alive but silent: only the call timeout ends the wait
        _wait_until_stopped(sim.pid)  # the signal lands asynchronously; a busy machine is slow
        try:
            started = time.monotonic()
            with pytest.raises(ConnectionFailed):
                hung.vms.list()
            assert time.monotonic() - started < 5
        finally:
            os.kill(sim.pid, signal.SIGCONT)
        host = anyvirt.connect(sim.anyvirt_uri_with_ca + "&timeout=2", password=sim.password)
        sim.kill()
        started = time.monotonic()
        with pytest.raises(ConnectionFailed):
            host.vms.list()
        assert time.monotonic() - started < 5
        host.close()  # logging out of a dead server must not raise
        hung.close()


def _wait_until_stopped(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


def _drop_session(host: anyvirt.Host) -> None:
    """End the server-side session behind the driver's back, as an expiry would."""
    driver = host.driver
    assert isinstance(driver, VSphereDriver)
    driver.session.content.sessionManager.Logout()


def test_expired_session_logs_in_again_for_reads(vsphere_host: anyvirt.Host) -> None:
    before = {vm.id for vm in vsphere_host.vms.list()}
    _drop_session(vsphere_host)
    assert {vm.id for vm in vsphere_host.vms.list()} == before
    _drop_session(vsphere_host)
    assert vsphere_host.nodes.list()


def test_expired_session_does_not_repeat_a_write(vsphere_host: anyvirt.Host, spec_for: object) -> None:
    vm = vsphere_host.vms.create(spec_for("relogin-write"))  # type: ignore[operator]
    try:
        driver = vsphere_host.driver
        assert isinstance(driver, VSphereDriver)
        ref = driver.session.ref(vim.VirtualMachine, vm.info().extra["moref"])
        _drop_session(vsphere_host)
        with pytest.raises(ConnectionFailed, match="not repeated"):
            driver.session.call(lambda: ref.PowerOnVM_Task(None), "power on", read=False)
        assert vm.refresh().state is PowerState.STOPPED  # logged in again, write not sent twice
        vm.start()
        assert vm.state is PowerState.RUNNING
        vm.stop(force=True)
    finally:
        vm.refresh()
        if vm.state is PowerState.RUNNING:
            vm.stop(force=True)
        vm.delete()


def test_close_logs_out(vcsim: Vcsim) -> None:
    watcher = anyvirt.connect(vcsim.anyvirt_uri_with_ca, password=vcsim.password)
    manager = watcher.native.content.sessionManager

    def sessions() -> set[str]:
        return {s.key for s in manager.sessionList}

    before = sessions()
    host = anyvirt.connect(vcsim.anyvirt_uri_with_ca, password=vcsim.password)
    during = sessions()
    assert len(during - before) == 1
    host.close()
    assert sessions() == before
    # a closed connection is closed: no quiet re-login leaving a session nobody logs out
    with pytest.raises(ConnectionFailed, match="closed"):
        host.vms.list()
    with pytest.raises(ConnectionFailed, match="closed"):
        host.nodes.list()
    with pytest.raises(ConnectionFailed, match="closed"):
        upload(host, "LocalDS_0", "after-close.bin", io.BytesIO(b"x"), size=1)
    assert sessions() == before
    watcher.close()
