"""The tests' own pieces around fakepve: the traffic record behind the schema check, the
in-process fake, and the stand-ins for what fakepve does not model (see conftest)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import requests
import requests.adapters
from anyvirt_proxmox.testbed import HOST, USER
from fakepve import FakePve
from pve_schema_support import check_request

NODES = ("pve1", "pve2", "pve3")
PASSWORD = "fakepve-test-password"
Send = Callable[[requests.PreparedRequest], requests.Response]


# ---------------------------------------------------------------- the schema check
class Traffic:
    """Every request seen in one test, and the schema violations among them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[dict[str, str]] = []  # each request's query and form values
        self.violations: list[str] = []
        self.standins: list[StandIn] = []

    def paths(self, method: str | None = None) -> list[str]:
        return [unquote(urlsplit(url).path) for m, url in self.requests if method in (None, m)]


current: Traffic | None = None
_real_send = requests.adapters.HTTPAdapter.send


def checked_send(self: requests.adapters.HTTPAdapter, request: requests.PreparedRequest,
                  *args: Any, **kwargs: Any) -> requests.Response:
    traffic = current
    if traffic is not None and "/api2/" in str(request.url):
        method, url = str(request.method), str(request.url)
        traffic.requests.append((method, url))
        traffic.bodies.append(form(request))
        body = getattr(request.body, "fields", request.body)  # a streamed upload: its form fields
        traffic.violations += check_request(method, url, body, str(request.headers.get("Content-Type", "")))

        def send(req: requests.PreparedRequest) -> requests.Response:
            return _real_send(self, req, *args, **kwargs)

        for standin in traffic.standins:
            answer = standin.handle(request, send)
            if answer is not None:
                return answer
    return _real_send(self, request, *args, **kwargs)


def pve_response(request: requests.PreparedRequest, status: int, data: Any = None,
                 message: str | None = None) -> requests.Response:
    """An answer in PVE's shape: ``{"data": ...}``, with the message as reason on errors."""
    response = requests.Response()
    response.status_code = status
    response.reason = message or "OK"
    body: dict[str, Any] = {"data": data}
    if message:
        body["message"] = message + "\n"
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json;charset=UTF-8"
    response.url = str(request.url)
    response.request = request
    response.encoding = "utf-8"
    return response


def form(request: requests.PreparedRequest) -> dict[str, str]:
    fields = getattr(request.body, "fields", None)
    if fields is not None:
        return dict(fields)
    body = request.body or ""
    text = body.decode() if isinstance(body, bytes) else str(body)
    return dict(parse_qsl(text)) | dict(parse_qsl(urlsplit(str(request.url)).query))


class StandIn:
    """This project's own answer to a request fakepve does not model (see each subclass)."""

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        raise NotImplementedError


class InProcessFakePve:
    """fakepve served on its own event loop in a thread of this process."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.pve = FakePve(user=USER, password=PASSWORD, host=HOST, port=0)
        self.pve.time_scale = 0
        for node in NODES:
            self.pve.add_node(node)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fakepve", daemon=True)
        self.thread.start()
        self.call(self.pve.start(str(cert), str(key)))
        self.cafile = cert

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def sync(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the fake's loop (its state is not thread-safe)."""
        async def run() -> Any:
            return fn()
        return self.call(run())

    @property
    def uri(self) -> str:
        return f"proxmox://root%40pam@{HOST}:{self.pve.port}?ca={self.cafile}"

    def stop(self) -> None:
        self.call(self.pve.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


MIGRATE = re.compile(r"/api2/json/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)/migrate$")


class MigrationStandIn(StandIn):
    """Stand-in for fakepve's migration (it accepts ``POST .../migrate`` without moving the VM,
    and its precheck is a made-up sample): the precheck as PVE computes it for local storage
    (every other online node allowed, the VM's disks on non-shared storage listed as local),
    PVE's refusals for a bad target or a running VM without ``online``, and the move itself
    by fakepve's own migration scenario (a real ``qmigrate`` task on the fake)."""

    def __init__(self, fake: InProcessFakePve) -> None:
        self.fake = fake
        self.moves: list[dict[str, str]] = []

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        match = MIGRATE.search(urlsplit(str(request.url)).path)
        if match is None:
            return None
        pve, node, vmid = self.fake.pve, unquote(match["node"]), int(match["vmid"])
        vm = pve.vm(vmid)
        if vm is None or vm.node != node:
            return pve_response(request, 500, message=f"Configuration file 'nodes/{node}/qemu-server/"
                                                      f"{vmid}.conf' does not exist")
        others = [n for n in sorted(pve.nodes) if n != node and pve.nodes[n].get("online", True)]
        disks = self._local_disks(vm)
        if request.method == "GET":
            return pve_response(request, 200, {
                "running": 1 if vm.status == "running" else 0, "allowed_nodes": others,
                "not_allowed_nodes": {}, "local_disks": disks, "local_resources": [],
                "has-dbus-vmstate": 0, "mapped-resources": [], "mapped-resource-info": {}})
        params = form(request)
        target = params.get("target", "")
        if target == node:
            return pve_response(request, 400, message="Parameter verification failed.")
        if target not in others:
            return pve_response(request, 500, message=f"no such cluster node '{target}'")
        if vm.status == "running" and params.get("online") != "1":
            return pve_response(request, 500, message="can't migrate running VM without --online")
        if disks and params.get("with-local-disks") != "1":
            return pve_response(request, 500, message=f"can't migrate local disk '{disks[0]['volid']}': "
                                                      "please use --with-local-disks")
        self.moves.append(params)
        upid = self.fake.call(pve.migrate(vmid, target, secs=0))
        return pve_response(request, 200, upid)

    def _local_disks(self, vm: Any) -> list[dict[str, Any]]:
        shared = {name for name, s in self.fake.pve.storages.items() if s.get("shared")}
        out = []
        for key, value in vm.config.items():
            if re.fullmatch(r"(ide|sata|scsi|virtio|efidisk)\d+", key) and "media=cdrom" not in str(value):
                volid = str(value).split(",")[0]
                if volid.split(":")[0] not in shared:
                    out.append({"volid": volid, "size": 0, "cdrom": 0, "is_unused": 0})
        return out


HA_PATHS = {"/api2/json/cluster/ha/resources": "resources",
            "/api2/json/cluster/ha/status/current": "status"}


class HaStandIn(StandIn):
    """Stand-in for PVE's HA manager, which fakepve does not model (its
    ``/cluster/ha/resources`` lists a placeholder): the test says which guests are HA
    resources and what the HA status says of each, in PVE's shapes
    (``GET /cluster/ha/resources``: ``sid``, ``state``, ``type``; ``GET
    /cluster/ha/status/current``: a ``quorum`` and a ``master`` entry, then one
    ``service`` entry per resource with ``sid``, ``node``, ``state``, ``status``)."""

    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []
        self.services: list[dict[str, Any]] = []

    def manage(self, vmid: int, node: str, state: str, requested: str = "started") -> None:
        sid = f"vm:{vmid}"
        self.resources.append({"sid": sid, "state": requested, "type": "vm", "max_restart": 1,
                               "max_relocate": 1, "digest": "0" * 40})
        self.services.append({"id": f"service:{sid}", "type": "service", "sid": sid, "node": node,
                              "state": state, "crm_state": state, "request_state": requested,
                              "status": f"{sid} ({node}, {state})"})

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        which = HA_PATHS.get(urlsplit(str(request.url)).path)
        if which is None or request.method != "GET":
            return None
        if which == "resources":
            return pve_response(request, 200, self.resources)
        head = [{"id": "quorum", "type": "quorum", "status": "OK", "quorate": 1, "node": "pve1"},
                {"id": "master", "type": "master", "status": "pve1 (active)", "node": "pve1"}]
        return pve_response(request, 200, head + self.services)
