"""An import lease never gets the session cookie (or the disk) over plain HTTP when the session is TLS.

The lease URL is the platform's output: a host that offers ``http://*/nfc/...``
to a TLS session (misconfigured, or a man in the middle rewriting the SOAP
answer) must be refused before a byte goes, the lease aborted and the
half-made VM removed. Against vcsim over TLS, its real lease info rewritten to
``http``; and against vcsim over plain HTTP, where ``http`` is the session's
own transport and the import works.
"""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from typing import Any

import pytest
from anyvirt_vsphere import nfc_import
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt
from anyvirt.errors import ConnectionFailed
from anyvirt.host import Host
from anyvirt.model import DiskSpec, VMSpec


@pytest.fixture
def plain_requests(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The headers of every request sent on a plain (not TLS) HTTP connection."""
    sent: list[dict[str, str]] = []
    original = http.client.HTTPConnection.request

    def request(self: http.client.HTTPConnection, method: str, url: str, *args: Any,
                **kwargs: Any) -> None:
        if not isinstance(self, http.client.HTTPSConnection):
            sent.append(dict(kwargs.get("headers") or (args[1] if len(args) > 1 else {})))
        original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(http.client.HTTPConnection, "request", request)
    return sent


def _lease_urls_on_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's real lease info, with every device URL's scheme turned into ``http``."""
    real = nfc_import._wait_ready

    def on_http(*args: Any, **kwargs: Any) -> Any:
        info = real(*args, **kwargs)
        for device in info.deviceUrl or []:
            device.url = "http" + device.url.removeprefix("https")
        return info

    monkeypatch.setattr(nfc_import, "_wait_ready", on_http)


def _image(tmp_path: Path) -> str:
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(256 * 1024) + bytes(768 * 1024))
    return str(image)


def test_a_plain_http_lease_url_is_refused_on_a_tls_session(
        vsphere_host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        plain_requests: list[dict[str, str]]) -> None:
    assert not vsphere_host.driver.session.plain_http  # type: ignore[attr-defined]
    _lease_urls_on_http(monkeypatch)
    node = "DC0_C0_H0" if len(vsphere_host.nodes.list()) > 1 else None
    before = {vm.id for vm in vsphere_host.vms.list()}
    with pytest.raises(ConnectionFailed, match=r"clear text"):
        vsphere_host.vms.create(VMSpec(name="lease-on-http", node=node,
                                       disks=[DiskSpec(image=_image(tmp_path))]))
    assert plain_requests == []  # nothing went in clear text, least of all the cookie
    assert {vm.id for vm in vsphere_host.vms.list()} == before  # the half-made VM is gone


def test_a_plain_http_session_imports_over_its_own_http_lease(
        tmp_path: Path, plain_requests: list[dict[str, str]]) -> None:
    with Vcsim(tls=False, vms=0, standalone_hosts=0, hosts=1, workdir=tmp_path / "sim") as sim:
        uri = sim.anyvirt_uri
        with anyvirt.connect(uri, password=sim.password) as host:
            node = "DC0_C0_H0" if len(host.nodes.list()) > 1 else None
            vm = host.vms.create(VMSpec(name="lease-plain", node=node,
                                        disks=[DiskSpec(image=_image(tmp_path))]))
            vm.delete(disks=True)
    assert any(sent.get("Content-Type") == nfc_import.CONTENT_TYPE for sent in plain_requests)
