"""Reading the cluster: VMs, containers, nodes and storages, from ``/cluster/resources``.

One ``GET /cluster/resources?type=vm`` lists every guest of the cluster with
its node, status, CPUs, memory, template flag, lock and HA state, however
many there are. QEMU guests are VMs; LXC containers are listed apart
(``list_containers``) and never handled as VMs. Where each VM lives is kept
from the last listing, so a VM's own requests go to its node straight away;
a VM that moved meanwhile is found again with one more listing.
"""

from __future__ import annotations

import threading
from typing import Any

from attrs import frozen

from anyvirt.errors import NotFound
from anyvirt.model import MIB, NodeInfo, PowerState, StorageInfo, VMSummary, summary_row
from anyvirt_proxmox.config import looks_like_vmid, vmid
from anyvirt_proxmox.session import Session

# qmpstatus values (QEMU's RunState) that are not "running"
PAUSED_QMP = {"paused", "suspended", "prelaunch", "inmigrate", "postmigrate", "finish-migrate",
              "save-vm", "restore-vm"}
BRIDGE_TYPES = ("bridge", "OVSBridge")
CRASHED_QMP = {"internal-error", "io-error", "guest-panicked", "shutdown"}


@frozen
class Container:
    """An LXC container: listed as what it is, never as a VM."""

    id: str
    name: str
    status: str
    node: str | None


def power_state(status: str, qmpstatus: str | None, lock: str | None) -> PowerState:
    if status == "running":
        if qmpstatus in PAUSED_QMP:
            return PowerState.PAUSED
        if qmpstatus in CRASHED_QMP:
            return PowerState.CRASHED
        return PowerState.RUNNING
    if status == "stopped":
        return PowerState.SUSPENDED if lock == "suspended" else PowerState.STOPPED
    return PowerState.UNKNOWN


def raw_state(status: str, qmpstatus: str | None, lock: str | None, hastate: str | None) -> str:
    """PVE's own words: status, QEMU's state where it differs, the config lock, the HA state."""
    raw = status or "unknown"
    if qmpstatus and qmpstatus != status:
        raw += f"/{qmpstatus}"
    if lock:
        raw += f" lock={lock}"
    if hastate:
        raw += f" ha={hastate}"
    return raw


_PLAIN_STATES = {"running": PowerState.RUNNING, "stopped": PowerState.STOPPED}


def summary_from_resource(row: dict[str, Any]) -> VMSummary:
    """One listing row as a VMSummary. Called once per VM of the cluster, so the common row
    (no lock, no HA) takes the short way."""
    get = row.get
    status = get("status") or "unknown"
    lock, hastate = get("lock"), get("hastate")
    if lock or hastate or status not in _PLAIN_STATES:
        state, raw = power_state(status, None, lock), raw_state(status, None, lock, hastate)
    else:
        state, raw = _PLAIN_STATES[status], status
    vmid = row["vmid"]
    return summary_row(str(vmid), get("name") or f"VM {vmid}", state, raw, int(get("maxcpu") or 0),
                       int(get("maxmem") or 0) // MIB, get("node"), get("template") in (1, "1"))


def summary_from_status(vm_id: str, node: str, data: dict[str, Any]) -> VMSummary:
    status = str(data.get("status", "unknown"))
    lock = data.get("lock") or None
    ha = data.get("ha")
    hastate = ha.get("state") if isinstance(ha, dict) and ha.get("managed") else None
    return VMSummary(
        id=vm_id, name=str(data.get("name") or f"VM {vm_id}"),
        state=power_state(status, data.get("qmpstatus"), lock),
        raw_state=raw_state(status, data.get("qmpstatus"), lock, hastate),
        cpus=int(data.get("cpus") or 0), memory_mib=int(data.get("maxmem") or 0) // MIB,
        node=node, template=bool(int(data.get("template") or 0)),
    )


class Inventory:
    """The cluster as listings, plus where each VM was last seen."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._nodes_of: dict[str, str] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ guests
    def guests(self) -> list[dict[str, Any]]:
        rows = self._guest_rows()
        self._remember_nodes({str(r["vmid"]): str(r["node"]) for r in rows
                              if r.get("type") == "qemu" and r.get("node")})
        return rows

    def list_vms(self) -> list[VMSummary]:
        # one pass over the rows for both the summaries and where each VM is (guests() makes two)
        out: list[VMSummary] = []
        nodes: dict[str, str] = {}
        for row in self._guest_rows():
            if row.get("type") == "qemu":
                summary = summary_from_resource(row)
                out.append(summary)
                if summary.node:
                    nodes[summary.id] = str(summary.node)
        self._remember_nodes(nodes)
        return out

    def _guest_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.session.get(("cluster", "resources"), "listing guests", type="vm")
        return rows

    def _remember_nodes(self, nodes: dict[str, str]) -> None:
        with self._lock:
            self._nodes_of = nodes

    def list_containers(self) -> list[Container]:
        return [Container(id=str(r["vmid"]), name=str(r.get("name") or ""),
                          status=str(r.get("status", "unknown")), node=r.get("node"))
                for r in self.guests() if r.get("type") == "lxc"]

    def find_vm(self, ref: str) -> VMSummary:
        rows = self.guests()
        if looks_like_vmid(ref):
            wanted = str(vmid(ref))
            for row in rows:
                if str(row.get("vmid")) == wanted:
                    if row.get("type") != "qemu":
                        raise NotFound(f"{wanted} on {self.session.target.safe_uri} is an LXC container, "
                                       "not a VM")
                    return summary_from_resource(row)
            raise NotFound(f"no VM with id {wanted} on {self.session.target.safe_uri}")
        for row in rows:
            if row.get("type") == "qemu" and row.get("name") == ref:
                return summary_from_resource(row)
        raise NotFound(f"no VM with id or name {ref!r} on {self.session.target.safe_uri}")

    def node_of(self, vm_id: str, refresh: bool = False) -> str:
        """The node VM ``vm_id`` is on: from the last listing, else from a new one."""
        key = str(vmid(vm_id))
        with self._lock:
            node = None if refresh else self._nodes_of.get(key)
        if node is None:
            self.guests()
            with self._lock:
                node = self._nodes_of.get(key)
        if node is None:
            raise NotFound(f"no VM with id {key} on {self.session.target.safe_uri}")
        return node

    def forget(self, vm_id: str) -> None:
        with self._lock:
            self._nodes_of.pop(str(vm_id), None)

    def remember(self, vm_id: str, node: str) -> None:
        with self._lock:
            self._nodes_of[str(vm_id)] = node

    def vm_get(self, vm_id: str, tail: tuple[object, ...], what: str, **params: Any) -> Any:
        """GET ``/nodes/{node}/qemu/{vmid}/<tail>``, following a VM that moved since the last listing."""
        node = self.node_of(vm_id)
        try:
            return self.session.get(("nodes", node, "qemu", vmid(vm_id), *tail), what, **params)
        except NotFound:
            fresh = self.node_of(vm_id, refresh=True)
            if fresh == node:
                raise
            return self.session.get(("nodes", fresh, "qemu", vmid(vm_id), *tail), what, **params)

    def vm_summary(self, vm_id: str) -> VMSummary:
        data = self.vm_get(vm_id, ("status", "current"), f"reading VM {vm_id}")
        return summary_from_status(str(vmid(vm_id)), self.node_of(vm_id), data)

    def vm_config(self, vm_id: str) -> dict[str, Any]:
        config: dict[str, Any] = self.vm_get(vm_id, ("config",), f"reading the config of VM {vm_id}")
        return config

    # ------------------------------------------------------------ nodes and storage
    def resources(self) -> list[dict[str, Any]]:
        """Nodes and storages (and guests) in one request."""
        rows: list[dict[str, Any]] = self.session.get(("cluster", "resources"), "reading the cluster")
        return rows

    def nodes(self, cluster: str | None, version: str) -> list[NodeInfo]:
        rows = self.session.get(("nodes",), "listing nodes")
        return [node_info(r, cluster, version) for r in sorted(rows, key=lambda r: str(r.get("node")))]

    def online_nodes(self) -> list[str]:
        rows = self.session.get(("nodes",), "listing nodes")
        return sorted(str(r["node"]) for r in rows if r.get("status") == "online")

    def node_storages(self, node: str, content: str = "images") -> list[dict[str, Any]]:
        """Storages enabled on ``node`` that hold ``content``."""
        rows: list[dict[str, Any]] = self.session.get(("nodes", node, "storage"),
                                                      f"listing the storages of {node}",
                                                      content=content, enabled=1)
        return [r for r in rows if r.get("active")]

    def bridges(self, node: str) -> list[str]:
        rows = self.session.get(("nodes", node, "network"), f"listing the bridges of {node}",
                                type="any_bridge")
        return sorted(str(r["iface"]) for r in rows if r.get("type") in BRIDGE_TYPES)


def node_info(row: dict[str, Any], cluster: str | None, version: str) -> NodeInfo:
    online = row.get("status") == "online"
    maxmem = int(row.get("maxmem") or 0)
    return NodeInfo(
        id=str(row["node"]), name=str(row["node"]),
        state="online" if online else ("offline" if row.get("status") == "offline" else "unknown"),
        cpus=int(row.get("maxcpu") or 0), memory_mib=maxmem // MIB,
        free_memory_mib=(maxmem - int(row.get("mem") or 0)) // MIB if online else None,
        cluster=cluster, hypervisor=f"Proxmox VE {version}",
    )


def storage_infos(rows: list[dict[str, Any]]) -> tuple[list[StorageInfo], dict[str, list[str]]]:
    """StorageInfo per storage (a shared one once, with node None) and each one's content types."""
    seen: dict[str, StorageInfo] = {}
    content: dict[str, list[str]] = {}
    for row in rows:
        if row.get("type") != "storage":
            continue
        shared = bool(int(row.get("shared") or 0))
        name = str(row["storage"])
        key = name if shared else f"{row.get('node')}/{name}"
        if key in seen:
            continue
        total, used = int(row.get("maxdisk") or 0), int(row.get("disk") or 0)
        seen[key] = StorageInfo(name=name, type=str(row.get("plugintype", "")), capacity_bytes=total,
                                allocated_bytes=used, available_bytes=max(0, total - used),
                                node=None if shared else row.get("node"),
                                active=row.get("status") == "available")
        content[name] = sorted(c for c in str(row.get("content", "")).split(",") if c)
    return list(seen.values()), content
