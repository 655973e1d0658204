"""The tests' own pieces around fakepve: the traffic record behind the schema check, the
in-process fake, and the stand-ins for what fakepve does not model (see conftest)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
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


# ---------------------------------------------------------------- vzdump and restore
VZDUMP = re.compile(r"/api2/json/nodes/(?P<node>[^/]+)/vzdump$")
QEMU_CREATE = re.compile(r"/api2/json/nodes/(?P<node>[^/]+)/qemu$")
DRIVE = re.compile(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+")
#: what vzdump's archive extension is for each ``compress`` value (PVE's VZDump.pm)
ARCHIVE_SUFFIX = {"0": ".vma", "1": ".vma.lzo", "lzo": ".vma.lzo", "gzip": ".vma.gz", "zstd": ".vma.zst"}
#: config keys a restored VM does not take from the archive (state, not configuration)
NOT_RESTORED = {"digest", "lock", "parent", "snaptime", "vmstate", "pending", "meta"}


class VzdumpStandIn(StandIn):
    """Stand-in for the archive vzdump writes (fakepve runs the ``vzdump`` task, locking the VM,
    but no backup volume appears): after fakepve's own task, a volume
    ``<storage>:backup/vzdump-qemu-<vmid>-<YYYY_MM_DD-HH_MM_SS>.vma.zst`` in fakepve's storage
    model, with PVE's size, ctime, notes (``{{guestname}}``/``{{vmid}}`` expanded) and protected
    flag, and the task log's ``creating vzdump archive`` line. The VM's config is kept as
    vzdump keeps ``qemu-server.conf`` inside the archive, for :class:`ArchiveRestoreStandIn`.
    A storage without ``backup`` content is refused with PVE's words."""

    def __init__(self, fake: InProcessFakePve) -> None:
        self.fake = fake
        self.archives: dict[str, dict[str, Any]] = {}  # volid -> the config as archived

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        match = VZDUMP.search(urlsplit(str(request.url)).path)
        if match is None or request.method != "POST":
            return None
        params, pve, node = form(request), self.fake.pve, unquote(match["node"])
        storage = params.get("storage", "local")
        store = pve.storages.get(storage)
        if store is None or "backup" not in str(store.get("content", "")).split(","):
            return pve_response(request, 500, message=f"can't use storage '{storage}' for backups - "
                                                      "wrong content type")
        answer = send(request)
        if answer.status_code != 200:
            return answer
        upid = answer.json()["data"]
        vmid = int(params["vmid"])
        vm = pve.vm(vmid)
        stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.gmtime())
        suffix = ARCHIVE_SUFFIX[params.get("compress", "0")]
        volname = f"backup/vzdump-qemu-{vmid}-{stamp}{suffix}"
        notes = params.get("notes-template", "").replace("{{guestname}}", str(vm.config.get("name", "")))
        notes = notes.replace("{{vmid}}", str(vmid)).replace("{{node}}", node)
        size = 4096 + sum(len(str(v)) for v in vm.config.values())

        def archive() -> None:
            volume: dict[str, Any] = {"content": "backup", "format": suffix[1:], "size": size,
                                      "ctime": int(time.time()), "vmid": vmid}
            if notes:
                volume["notes"] = notes
            if params.get("protected") == "1":
                volume["protected"] = True
            store.setdefault("volumes", {})[volname] = volume
            path = f"{store.get('path', '/var/lib/vz')}/dump/{volname.split('/', 1)[1]}"
            pve.tasks[upid]["log"].insert(-1, f"INFO: creating vzdump archive '{path}'")

        self.fake.sync(archive)
        self.archives[f"{storage}:{volname}"] = dict(vm.config)
        return answer


class ArchiveRestoreStandIn(StandIn):
    """Stand-in for PVE's restore (fakepve answers every ``POST /nodes/{node}/qemu`` with
    ``archive=`` "restoring an archive is not supported"): PVE's refusals first (a drive option
    beside ``archive``, a vmid that exists, an archive that is gone), then the archived config
    becomes a VM through fakepve's own create (disks allocated anew on ``storage`` or their
    archived storage, ``name`` and the other given options over the archived ones, new MACs
    and SMBIOS UUID with ``unique``), and the task is PVE's: ``qmrestore`` with a restore log."""

    def __init__(self, fake: InProcessFakePve, dumps: VzdumpStandIn) -> None:
        self.fake = fake
        self.dumps = dumps
        self.restored: list[dict[str, str]] = []

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        match = QEMU_CREATE.search(urlsplit(str(request.url)).path)
        if match is None or request.method != "POST":
            return None
        params = form(request)
        if "archive" not in params:
            return None
        pve, node, vmid, volid = self.fake.pve, unquote(match["node"]), int(params["vmid"]), params["archive"]
        drives = [k for k in params if DRIVE.fullmatch(k)]
        if drives:
            return pve_response(request, 400, {drives[0]: "option conflicts with option 'archive'"},
                                message="Parameter verification failed.")
        existing = pve.vm(vmid)
        if existing is not None and params.get("force") != "1":
            return pve_response(request, 500, message=f"unable to restore VM {vmid} - VM {vmid} already "
                                                      f"exists on node '{existing.node}'")
        storage, _, volname = volid.partition(":")
        archived = self.dumps.archives.get(volid)
        if archived is None or volname not in pve.storages.get(storage, {}).get("volumes", {}):
            return pve_response(request, 500, message=f"volume '{volid}' does not exist")
        create = {"vmid": str(vmid)}
        for key, value in archived.items():
            if key in NOT_RESTORED or key.startswith("unused"):
                continue
            text = str(value)
            if DRIVE.fullmatch(key) and "media=cdrom" not in text:
                source, _, props = text.partition(",")
                kept = [p for p in props.split(",") if p and not p.startswith("size=")]
                size = next((p[5:] for p in props.split(",") if p.startswith("size=")), "1G")
                gib = _gib(size)
                text = ",".join([f"{params.get('storage') or source.split(':')[0]}:{gib}", *kept])
            elif params.get("unique") == "1" and re.fullmatch(r"net\d+", key):
                text = re.sub(r"^(\w+)=[0-9A-Fa-f:]{17}", r"\1", text)  # fakepve picks a new MAC
            elif params.get("unique") == "1" and key == "smbios1":
                text = re.sub(r"uuid=[0-9a-fA-F-]+", f"uuid={uuid.uuid4()}", text)
            create[key] = text
        for key in ("name", "pool"):
            if key in params:
                create[key] = params[key]
        made = request.copy()
        made.prepare_body(data=create, files=None)
        answer = send(made)
        if answer.status_code != 200:
            return answer
        created = answer.json()["data"]

        def relabel() -> str:
            record = pve.tasks.pop(created)
            upid, pid, start = pve._upid(node, "qmrestore", vmid, record["user"])
            record.update(upid=upid, pid=pid, pstart=pid * 7, starttime=start, type="qmrestore")
            record["log"][:-1] = [f"restore vma archive: zstd -q -d -c {volname}", "rescan volumes...",
                                  *[line for line in record["log"][:-1] if "TASK" not in line]]
            pve.tasks[upid] = record
            return upid

        self.restored.append(params)
        return pve_response(request, 200, self.fake.sync(relabel))


def _gib(size: str) -> str:
    units = {"K": 1 / (1024 * 1024), "M": 1 / 1024, "G": 1, "T": 1024}
    number = float(size[:-1]) * units[size[-1]] if size[-1] in units else float(size) / 1024 ** 3
    return f"{number:g}"


CONTENT = re.compile(r"/api2/json/nodes/(?P<node>[^/]+)/storage/(?P<storage>[^/]+)/content/"
                     r"(?P<volume>[^/]+)$")
LINKED_VOLNAME = re.compile(r"^\d+/base-[^/]+/(?P<vmid>\d+)/(?P<name>[^/]+)$")


class LinkedVolumeStandIn(StandIn):
    """Stand-in for fakepve's ``GET .../storage/{storage}/content/{volume}`` of a linked
    clone's volume on a directory storage: fakepve names it as PVE does
    (``100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2``) but cannot parse that name
    back ("unable to parse volume filename"); PVE's ``parse_volname`` does, and its
    ``filesystem_path`` puts the clone's own file under its own VM id:
    ``<path>/images/101/vm-101-disk-0.qcow2``. Size and format are fakepve's record."""

    def __init__(self, fake: InProcessFakePve) -> None:
        self.fake = fake

    def handle(self, request: requests.PreparedRequest, send: Send) -> requests.Response | None:
        match = CONTENT.search(urlsplit(str(request.url)).path)
        if request.method != "GET" or match is None:
            return None
        storage, volid = unquote(match["storage"]), unquote(match["volume"])
        volname = volid.partition(":")[2]
        linked = LINKED_VOLNAME.match(volname)
        store = self.fake.pve.storages.get(storage) or {}
        volume = store.get("volumes", {}).get(volname)
        if linked is None or volume is None or "path" not in store:
            return None
        return pve_response(request, 200, {
            "path": f"{store['path']}/images/{linked['vmid']}/{linked['name']}",
            "size": int(volume.get("size") or 0), "used": 0,
            "format": volume.get("format") or "raw"})
