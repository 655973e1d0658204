"""Logging in, staying logged in, TLS, timeouts, and what a dead or silent server gives."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from anyvirt_proxmox.driver import ProxmoxDriver
from fakepve import FakePve
from pve_support import PASSWORD, InProcessFakePve, StandIn, Traffic, form, pve_response

import anyvirt
from anyvirt.errors import AuthenticationFailed, ConnectionFailed, InvalidSpec
from anyvirt.model import Capability

TOKEN_ID, TOKEN_SECRET = "root@pam!anyvirt", "7b0c1e52-5f4e-4b7a-9c77-0d5c9ad1e0f1"


def _logins(traffic: Traffic) -> int:
    return sum(1 for p in traffic.paths("POST") if p.endswith("/access/ticket"))


def test_wrong_password_is_authentication_failed(fake: InProcessFakePve) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        anyvirt.connect(fake.uri, password="not-the-password")
    assert "not-the-password" not in str(info.value)
    assert "not-the-password" not in repr(info.value.__cause__)


def test_token_login(fake: InProcessFakePve, pve: FakePve, traffic: Traffic) -> None:
    pve.apitokens[TOKEN_ID] = TOKEN_SECRET
    uri = f"{fake.uri}&token_name=anyvirt&token_value={TOKEN_SECRET}"
    with anyvirt.connect(uri) as host:
        assert host.nodes.list()
        assert TOKEN_SECRET not in host.uri and TOKEN_SECRET not in repr(host.driver.target)
    assert _logins(traffic) == 0, "a token needs no ticket"
    with anyvirt.connect(fake.uri, token_name="anyvirt", token_value=TOKEN_SECRET) as host:
        assert host.vms.list() is not None
        # a keyword token is a Secret from the start too (it was kept as text in Target.options)
        assert TOKEN_SECRET not in repr(host.driver.target)
        assert TOKEN_SECRET not in str(dict(host.driver.target.options))
    with anyvirt.connect(fake.uri, token=f"{TOKEN_ID}={TOKEN_SECRET}") as host:  # PVE's whole form
        assert host.nodes.list()
    with pytest.raises(AuthenticationFailed):
        anyvirt.connect(fake.uri, token_name="anyvirt", token_value="wrong")


def test_revoked_ticket_is_renewed_unnoticed(pve_host: anyvirt.Host, pve: FakePve, traffic: Traffic) -> None:
    pve_host.vms.list()
    before = _logins(traffic)
    pve.revoke_tickets()  # as a ticket past its 2 hours, or a restarted cluster
    vm = pve_host.vms.create(anyvirt.VMSpec(name="relogin", memory_mib=64))  # a write, repeated safely
    try:
        assert _logins(traffic) == before + 1
        assert pve_host.vms.get("relogin").id == vm.id
    finally:
        vm.delete()


class TicketRenewalStandIn(StandIn):
    """Stand-in for PVE's ticket renewal, which fakepve lacks: PVE takes a valid ticket as the
    password of ``POST /access/ticket`` and answers with a fresh ticket."""

    def __init__(self, fake: InProcessFakePve) -> None:
        self.fake = fake
        self.renewed = 0

    def handle(self, request: requests.PreparedRequest, send: object) -> requests.Response | None:
        if request.method != "POST" or not str(request.url).endswith("/access/ticket"):
            return None
        fields = form(request)
        session = self.fake.pve.tickets.get(fields.get("password", ""))
        if session is None or session["user"] != fields.get("username"):
            return None  # a password login: fakepve's own
        ticket, csrf = self.fake.sync(lambda: self.fake.pve.issue_ticket(session["user"]))
        self.renewed += 1
        return pve_response(request, 200, {"ticket": ticket, "CSRFPreventionToken": csrf,
                                           "username": session["user"], "cap": {}})


def test_ticket_is_renewed_before_it_expires(pve_host: anyvirt.Host, traffic: Traffic,
                                             fake: InProcessFakePve) -> None:
    renewal = TicketRenewalStandIn(fake)
    traffic.standins.append(renewal)
    driver = pve_host.driver
    assert isinstance(driver, ProxmoxDriver)
    auth = driver.session.native._store["session"].auth
    auth.birth_time -= 3601  # an hour old: renewed well before PVE's two-hour expiry
    before = _logins(traffic)
    pve_host.vms.list()
    assert _logins(traffic) == before + 1
    assert renewal.renewed == 1, "renewed with the ticket, not the password"


def test_a_refused_renewal_logs_in_again(pve_host: anyvirt.Host, traffic: Traffic) -> None:
    driver = pve_host.driver
    assert isinstance(driver, ProxmoxDriver)
    driver.session.native._store["session"].auth.birth_time -= 3601
    logins = driver.session.logins
    assert pve_host.vms.list() is not None  # fakepve refuses the renewal: a fresh login instead
    assert driver.session.logins == logins + 1


def test_tls_is_verified(fake: InProcessFakePve) -> None:
    bare = fake.uri.split("?")[0]
    with pytest.raises(ConnectionFailed, match="not trusted"):
        anyvirt.connect(bare, password=PASSWORD)
    with anyvirt.connect(bare + "?verify=false", password=PASSWORD) as host:
        assert host.nodes.list()


@pytest.mark.parametrize("given", ["keyword", "uri", "whole"])
def test_a_token_an_http_header_cannot_carry_is_invalid_spec_before_any_request(
        fake: InProcessFakePve, traffic: Traffic, given: str) -> None:
    """A token secret beyond Latin-1 failed in http.client as a bare AnyvirtError whose chained
    UnicodeEncodeError held the whole auth header, secret included."""
    secret = "7b0c1e52-\u20ac-secret-\u00e9\u4e2d"
    if given == "keyword":
        call = lambda: anyvirt.connect(fake.uri, token_name="anyvirt", token_value=secret)  # noqa: E731
    elif given == "uri":
        call = lambda: anyvirt.connect(  # noqa: E731
            f"{fake.uri}&token_name=anyvirt&token_value={quote(secret, safe='')}")
    else:
        call = lambda: anyvirt.connect(fake.uri, token=f"{TOKEN_ID}={secret}")  # noqa: E731
    sent = len(traffic.requests)
    with pytest.raises(InvalidSpec, match="token_value") as caught:
        call()
    assert len(traffic.requests) == sent, "refused before any request"
    chain: list[BaseException | None] = [caught.value]
    while chain:
        item = chain.pop()
        if item is None:
            continue
        assert not isinstance(item, UnicodeError)
        assert secret not in str(item) and not any(secret in str(a) for a in item.args)
        chain += [item.__cause__, item.__context__]


@pytest.mark.parametrize("ca", ["/nonexistent/ca.pem", "relative/ca.pem"])
def test_an_unreadable_ca_file_is_invalid_spec_naming_it(fake: InProcessFakePve, ca: str) -> None:
    """As on every backend (the core's TLS setup): not ConnectionFailed "...: OSError"."""
    with pytest.raises(InvalidSpec, match="CA bundle") as caught:
        anyvirt.connect(f"{fake.uri.split('?')[0]}?ca={ca}", password=PASSWORD)
    assert ca in str(caught.value) and "No such file" in str(caught.value)


def test_a_relative_ca_path_is_read_from_the_working_directory(
        fake: InProcessFakePve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(fake.cafile, tmp_path / "ca.pem")
    monkeypatch.chdir(tmp_path)
    with anyvirt.connect(f"{fake.uri.split('?')[0]}?ca=ca.pem", password=PASSWORD) as host:
        assert host.nodes.list()


def test_bad_uris_are_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match="realm"):
        anyvirt.connect("proxmox://root@127.0.0.1:1", password="x")
    with pytest.raises(InvalidSpec, match="no URI option 'colour'"):
        anyvirt.connect("proxmox://root%40pam@127.0.0.1:1?colour=red", password="x")


def test_stopped_server_is_connection_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionFailed):
        anyvirt.connect(f"proxmox://root%40pam@127.0.0.1:{port}?verify=false", password="x")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and never answers (a hung PVE proxy)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


def test_silent_server_is_connection_failed_within_the_timeout(silent_server: int) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="no answer"):
        anyvirt.connect(f"proxmox://root%40pam@127.0.0.1:{silent_server}?verify=false&timeout=1",
                        password="x")
    assert time.monotonic() - started < 5


def test_server_stopping_mid_session_is_connection_failed(fake: InProcessFakePve, pve: FakePve) -> None:
    with anyvirt.connect(fake.uri + "&timeout=2", password=PASSWORD) as host:
        pve.set_node_offline("pve1")
        with pytest.raises(ConnectionFailed):
            host.driver.session.get(("nodes", "pve1", "qemu"), "listing VMs of pve1")


class StandaloneStandIn(StandIn):
    """Stand-in for a standalone PVE node: its /cluster/status has no cluster entry (fakepve
    always answers as a cluster)."""

    def handle(self, request: requests.PreparedRequest, send: object) -> requests.Response | None:
        if not str(request.url).endswith("/api2/json/cluster/status"):
            return None
        return pve_response(request, 200, [{"type": "node", "id": "node/pve1", "name": "pve1", "nodeid": 0,
                                            "online": 1, "local": 1, "ip": "192.0.2.11", "level": ""}])


def test_capabilities_per_connection(fake: InProcessFakePve, traffic: Traffic) -> None:
    with anyvirt.connect(fake.uri, password=PASSWORD) as cluster:
        assert Capability.LIVE_MIGRATION in cluster.capabilities
        assert cluster.info().extra["standalone"] is False
    traffic.standins.append(StandaloneStandIn())
    with anyvirt.connect(fake.uri, password=PASSWORD) as single:
        assert Capability.LIVE_MIGRATION not in single.capabilities
        assert Capability.COLD_MIGRATION not in single.capabilities
        assert Capability.SNAPSHOTS in single.capabilities
        assert single.info().extra["standalone"] is True


def test_every_request_was_checked(pve_host: anyvirt.Host, traffic: Traffic) -> None:
    pve_host.vms.list()
    assert any(p.endswith("/cluster/resources") for p in traffic.paths("GET"))
    assert traffic.violations == []


def test_a_stopped_fakepve_is_connection_failed_within_the_timeout(tmp_path: Path) -> None:
    from anyvirt_proxmox.testbed import FakePveTestbed

    bed = FakePveTestbed(nodes=1).start()
    try:
        ca = tmp_path / "ca.pem"  # outlives the testbed's own directory
        shutil.copy(str(bed.cafile), ca)
        host = anyvirt.connect(f"{bed.uri.split('?')[0]}?ca={ca}&timeout=2", password=bed.password)
        assert host.vms.list()
    finally:
        bed.stop()
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="cannot be reached"):
        host.vms.list()
    assert time.monotonic() - started < 4
    host.close()
