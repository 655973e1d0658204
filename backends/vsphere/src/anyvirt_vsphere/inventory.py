"""The inventory: datacenters, hosts (nodes), datastores, networks and VMs.

Ids: a VM's id is its ``config.instanceUuid`` (stable across renames,
re-registration keeps it, unlike the moref). A node's id is the HostSystem's
managed object id (``host-21``, ``ha-host`` on ESXi): unique and stable within
one vCenter, and unlike the BIOS UUID it is never duplicated (vcsim and some
OEM servers give several hosts the same hardware UUID). Nodes are also found
by name.

Names: vSphere stores ``%``, ``/`` and ``\\`` in entity names escaped as
``%25``, ``%2f`` and ``%5c`` (the inventory path separator must stay
unambiguous). Names go out through :func:`escape_name` and come back through
:func:`unescape_name`; quotes and non-ASCII need no escaping in entity names
(pyVmomi escapes XML).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import attrs

from anyvirt.errors import InvalidSpec, InvalidState, NotFound
from anyvirt.model import NodeInfo, PowerState, StorageInfo, VMSummary
from anyvirt.target import Target
from anyvirt_vsphere.collector import Collector, Props
from anyvirt_vsphere.sdk import vim, vmodl

MIB = 1024 * 1024

# ---------------------------------------------------------------- names

_ESCAPES = {"%": "%25", "/": "%2f", "\\": "%5c"}
_UNESCAPE = re.compile(r"%(25|2f|5c)", re.IGNORECASE)


def escape_name(name: str) -> str:
    """An entity name as vSphere stores it."""
    return "".join(_ESCAPES.get(ch, ch) for ch in name)


#: vSphere's limit on an entity name, counted in its stored (escaped) form
MAX_STORED_NAME = 80


def stored_name(name: str, what: str = "name") -> str:
    """``escape_name(name)``, refused with InvalidSpec when vSphere could not hold it.

    Escaping makes ``/``, ``%`` and ``\\`` three characters each, so a name
    within anyvirt's 80-character limit can still be too long for vSphere:
    better a clear InvalidSpec now than a failed task after the fact.
    """
    stored = escape_name(name)
    if len(stored) > MAX_STORED_NAME:
        raise InvalidSpec(
            f"{what} {name!r} is {len(stored)} characters as vSphere stores it "
            f"('/', '%' and '\\' count as three); the limit is {MAX_STORED_NAME}"
        )
    return stored


def unescape_name(stored: str) -> str:
    """The name the user gave, from the stored (escaped) form."""
    return _UNESCAPE.sub(lambda m: chr(int(m.group(1), 16)), stored)


def inventory_path(*names: str) -> str:
    """An inventory path (``dc/vm/folder/name``) from unescaped names."""
    return "/".join(escape_name(n) for n in names)


def datastore_path(datastore: str, path: str = "") -> str:
    """``[datastore] path``: the form vSphere uses for files."""
    if "]" in datastore or "[" in datastore:
        raise InvalidSpec(f"datastore name {datastore!r} cannot contain brackets")
    return f"[{datastore}] {path}".rstrip() if path else f"[{datastore}]"


def split_datastore_path(value: str) -> tuple[str | None, str]:
    match = re.match(r"^\[([^\]]*)\]\s*(.*)$", value or "")
    if not match:
        return None, value
    return match.group(1), match.group(2)


# ---------------------------------------------------------------- states

POWER_STATES = {
    "poweredOn": PowerState.RUNNING,
    "poweredOff": PowerState.STOPPED,
    "suspended": PowerState.SUSPENDED,
}


def power_state(raw: Any) -> tuple[PowerState, str]:
    text = str(raw) if raw is not None else ""
    return POWER_STATES.get(text, PowerState.UNKNOWN), text


# ---------------------------------------------------------------- VMs

VM_PATHS = (
    "name",
    "config.instanceUuid",
    "config.template",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "runtime.powerState",
    "runtime.host",
)


#: What a listing reads per VM. The node is not read per VM (``runtime.host``):
#: it comes from the hosts' ``vm`` lists in the same request, one element per
#: VM instead of a property triple each. The template flag is read per VM
#: (``config.template``): deriving it from resource pools' ``vm`` lists, as
#: this once did, called a relocated template a VM wherever a server left it
#: in a pool's list, and cloning it then failed.
LIST_PATHS = (
    "name",
    "config.instanceUuid",
    "config.template",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "runtime.powerState",
)


def vm_summary(props: Props, node: str | None = None, template: bool | None = None) -> VMSummary | None:
    """A VMSummary from one row; None for a VM still being created (no config yet).

    ``node`` and ``template`` override ``runtime.host`` and ``config.template``
    when the row was read without them (listings).
    """
    vm_id = props.get("config.instanceUuid")
    if not vm_id:
        return None
    state, raw = power_state(props.get("runtime.powerState"))
    if node is None:
        host = props.get("runtime.host")
        node = str(host._moId) if host is not None else None
    if template is None:
        template = bool(props.get("config.template", False))
    return VMSummary(
        id=str(vm_id),
        name=unescape_name(str(props.get("name", ""))),
        state=state,
        raw_state=raw,
        cpus=int(props.get("config.hardware.numCPU") or 0),
        memory_mib=int(props.get("config.hardware.memoryMB") or 0),
        node=node,
        template=template,
    )


# ---------------------------------------------------------------- hosts

HOST_PATHS = (
    "name",
    "parent",
    "runtime.connectionState",
    "runtime.powerState",
    "runtime.inMaintenanceMode",
    "hardware.cpuInfo.numCpuThreads",
    "hardware.memorySize",
    "summary.quickStats.overallMemoryUsage",
    "config.product.fullName",
)


@attrs.frozen
class HostRow:
    """A host as the driver needs it: its NodeInfo plus the references to place VMs."""

    node: NodeInfo
    ref: Any
    parent: Any  # ComputeResource or ClusterComputeResource


def _node_state(connection: str, power: str, maintenance: bool) -> str:
    """online | maintenance | offline | unknown. "offline" is proof that the host is down:
    vCenter reports it powered off (or in standby), which it knows only of a host it
    powered off itself. A host that stops answering (notResponding) or that was
    disconnected may still run its VMs: "unknown" (recovering it needs fenced=True)."""
    if connection == "connected":
        return "maintenance" if maintenance else "online"
    return "offline" if power in ("poweredOff", "standBy") else "unknown"


class Inventory:
    """Lookups over one session, scoped to the datacenter (and cluster) the URI chose."""

    def __init__(self, collector: Collector, target: Target) -> None:
        self.collector = collector
        self.session = collector.session
        self.datacenter_name = target.query.get("datacenter") or None
        self.cluster_name = target.query.get("cluster") or None
        self._datacenter: Props | None = None
        self._find_all = True  #: the server has SearchIndex.FindAllByUuid

    # ------------------------------------------------------------ datacenter
    def datacenter(self) -> Props:
        """The datacenter to work in: the named one, else the first."""
        if self._datacenter is None:
            rows = self.collector.scan(
                {vim.Datacenter: ("name", "vmFolder", "hostFolder", "datastoreFolder")},
                what="listing datacenters",
            )
            if not rows:
                raise NotFound("the server has no datacenter")
            rows.sort(key=lambda r: r.moid)
            if self.datacenter_name is None:
                self._datacenter = rows[0]
            else:
                for row in rows:
                    if unescape_name(row.get("name", "")) == self.datacenter_name:
                        self._datacenter = row
                        break
                else:
                    raise NotFound(f"no datacenter named {self.datacenter_name!r}")
        return self._datacenter

    def check_cluster(self) -> None:
        """A ``?cluster=`` that names no cluster is an error, not an empty inventory."""
        if self.cluster_name is None:
            return
        rows = self.collector.scan(
            {vim.ClusterComputeResource: ("name",)}, root=self.scope(), what="listing clusters"
        )
        names = sorted(unescape_name(r.get("name", "")) for r in rows)
        if self.cluster_name not in names:
            raise NotFound(f"no cluster named {self.cluster_name!r} (clusters: {', '.join(names) or 'none'})")

    def scope(self) -> Any:
        """The root of listings: the chosen datacenter, or the whole inventory if none was named."""
        return self.datacenter().ref if self.datacenter_name else None

    # ------------------------------------------------------------ VMs
    def list_vms(self) -> list[VMSummary]:
        rows = self.collector.scan(
            {vim.VirtualMachine: LIST_PATHS, vim.HostSystem: ("vm",)},
            root=self.scope(),
            what="listing VMs",
        )
        node_of: dict[str, str] = {}
        vm_rows = []
        for row in rows:
            if isinstance(row.ref, vim.VirtualMachine):
                vm_rows.append(row)
            elif isinstance(row.ref, vim.HostSystem):
                for ref in row.get("vm") or ():
                    node_of[ref._moId] = row.moid
        out = []
        for row in vm_rows:
            summary = vm_summary(row, node_of.get(row.moid))
            if summary is not None:
                out.append(summary)
        if self.cluster_name is not None:
            allowed = {n.node.id for n in self.hosts()}
            out = [s for s in out if s.node in allowed]
        return out

    def vm_ref(self, vm_id: str) -> Any:
        """The VirtualMachine reference for an instance UUID; NotFound if none.

        An instance UUID is not the platform's alone: whoever may reconfigure a VM can set
        it (``ConfigSpec.instanceUuid``), to another VM's. So every VM holding the id is
        found, and two or more are refused with InvalidState: anyvirt never acts on the
        first of them, which may be the other VM."""
        refs = self._refs_with_uuid(vm_id)
        if not refs:
            raise NotFound(f"no VM with id {vm_id}")
        if len(refs) > 1:
            raise InvalidState(
                f"{len(refs)} VMs hold the id {vm_id} (an instance UUID can be set by whoever "
                "may reconfigure a VM): refusing to act on any of them until one is changed")
        return refs[0]

    def _refs_with_uuid(self, vm_id: str) -> list[Any]:
        index = self.session.content.searchIndex
        if self._find_all:

            def find_all() -> list[Any] | None:
                try:
                    return list(index.FindAllByUuid(None, vm_id, True, True) or ())
                except vmodl.fault.MethodNotFound:
                    return None

            found = self.session.call(find_all, f"finding VM {vm_id}", read=True)
            if found is not None:
                return found
            self._find_all = False  # vcsim and hosts before 6.5: read every VM's id instead
        rows = self.collector.scan({vim.VirtualMachine: ("config.instanceUuid",)},
                                   what=f"finding VM {vm_id}")
        return [row.ref for row in rows if row.get("config.instanceUuid") == vm_id]

    def vm_props(self, vm_id: str, paths: Iterable[str]) -> Props:
        ref = self.vm_ref(vm_id)
        props = self.collector.one(ref, vim.VirtualMachine, tuple(paths), what=f"reading VM {vm_id}")
        if props is None:
            raise NotFound(f"VM {vm_id} vanished while being read")
        return props

    # ------------------------------------------------------------ hosts
    def hosts(self) -> list[HostRow]:
        rows = self.collector.scan(
            {
                vim.HostSystem: HOST_PATHS,
                vim.ClusterComputeResource: ("name",),
            },
            root=self.scope(),
            what="listing hosts",
        )
        clusters = {
            r.moid: unescape_name(r.get("name", ""))
            for r in rows
            if isinstance(r.ref, vim.ClusterComputeResource)
        }
        out: list[HostRow] = []
        for row in rows:
            if not isinstance(row.ref, vim.HostSystem):
                continue
            parent = row.get("parent")
            cluster = clusters.get(str(parent._moId)) if parent is not None else None
            if self.cluster_name is not None and cluster != self.cluster_name:
                continue
            memory = int(row.get("hardware.memorySize") or 0) // MIB
            used = row.get("summary.quickStats.overallMemoryUsage")
            maintenance = bool(row.get("runtime.inMaintenanceMode", False))
            node = NodeInfo(
                id=row.moid,
                name=unescape_name(row.get("name", "")),
                state=_node_state(str(row.get("runtime.connectionState", "")),
                                  str(row.get("runtime.powerState", "")), maintenance),
                cpus=int(row.get("hardware.cpuInfo.numCpuThreads") or 0),
                memory_mib=memory,
                free_memory_mib=None if used is None else max(memory - int(used), 0),
                cluster=cluster,
                maintenance=maintenance,
                hypervisor=str(row.get("config.product.fullName") or "VMware ESXi"),
            )
            out.append(HostRow(node=node, ref=row.ref, parent=parent))
        out.sort(key=lambda h: (h.node.cluster or "", h.node.name))
        return out

    def host(self, node: str) -> HostRow:
        """A host by node id, else by name."""
        rows = self.hosts()
        for row in rows:
            if row.node.id == node:
                return row
        for row in rows:
            if row.node.name == node:
                return row
        raise NotFound(f"no node (ESXi host) with id or name {node!r}")

    def resource_pool(self, host: HostRow) -> Any:
        """The root resource pool of the host's cluster or standalone compute resource."""
        props = self.collector.one(
            host.parent, vim.ComputeResource, ("resourcePool",), what="reading a resource pool"
        )
        pool = props.get("resourcePool") if props is not None else None
        if pool is None:
            raise NotFound(f"node {host.node.name!r} has no resource pool")
        return pool

    # ------------------------------------------------------------ storage, networks
    def datastores(self, host: HostRow | None = None) -> list[Props]:
        paths = (
            "name",
            "summary.capacity",
            "summary.freeSpace",
            "summary.type",
            "summary.accessible",
        )
        rows = self.collector.scan({vim.Datastore: paths}, root=self.scope(), what="listing datastores")
        if host is not None:
            rows = self._seen_by(host, "datastore", rows)
        return rows

    def _seen_by(self, host: HostRow, path: str, rows: list[Props]) -> list[Props]:
        """Rows the host lists in its own ``datastore``/``network`` property.

        The host's side is used because it is the one vcsim keeps right (its
        ``Datastore.host`` mount list names only the last host added).
        """
        props = self.collector.one(host.ref, vim.HostSystem, (path,), what=f"reading {path}s")
        seen = {str(ref._moId) for ref in (props.get(path) or ())} if props is not None else set()
        return [r for r in rows if r.moid in seen]

    def storage_info(self) -> list[StorageInfo]:
        out = []
        for row in self.datastores():
            capacity = int(row.get("summary.capacity") or 0)
            free = int(row.get("summary.freeSpace") or 0)
            out.append(
                StorageInfo(
                    name=unescape_name(row.get("name", "")),
                    type=str(row.get("summary.type") or ""),
                    capacity_bytes=capacity,
                    allocated_bytes=max(capacity - free, 0),
                    available_bytes=free,
                    active=bool(row.get("summary.accessible", True)),
                )
            )
        return sorted(out, key=lambda s: s.name)

    def datastore(self, name: str | None, host: HostRow | None) -> Props:
        """The named datastore, else the one with the most free space the host sees."""
        rows = self.datastores(host)
        if name is not None:
            for row in rows:
                if unescape_name(row.get("name", "")) == name:
                    return row
            raise InvalidSpec(f"no datastore named {name!r} is available on this host")
        usable = [r for r in rows if r.get("summary.accessible", True)]
        if not usable:
            raise InvalidSpec("no accessible datastore for this VM")
        return max(usable, key=lambda r: int(r.get("summary.freeSpace") or 0))

    def networks(self, host: HostRow | None = None) -> list[Props]:
        rows = self.collector.scan(
            {
                vim.Network: ("name",),
                vim.dvs.DistributedVirtualPortgroup: (
                    "name",
                    "key",
                    "config.distributedVirtualSwitch",
                ),
            },
            root=self.scope(),
            what="listing networks",
        )
        if host is not None:
            rows = self._seen_by(host, "network", rows)
        return rows

    def switch_uuid(self, switch: Any) -> str:
        props = self.collector.one(
            switch, vim.DistributedVirtualSwitch, ("uuid",), what="reading a distributed switch"
        )
        if props is None or not props.get("uuid"):
            raise NotFound("the distributed switch of a port group vanished")
        return str(props.get("uuid"))
