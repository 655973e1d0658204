"""A VM's disk bytes read from the node itself, over an SSH connection the caller opts into.

The PVE API has no way to download a VM disk, so portable backups, repository
backups and moves to another platform need the node: ``?ssh=root@pve1`` (or
the keyword ``ssh=``), as proxmoxer's SSH backends reach a node. In a cluster
the host may name the node: ``ssh=root@{node}.example.com`` puts each VM's
node name there; a plain host is used for every node (a standalone node, or
disks on shared storage). ``ssh_key=`` names a private key file (else the
agent and ~/.ssh), ``ssh_known_hosts=`` the file the node's host key must be
in (else ~/.ssh/known_hosts): an unknown key is refused, never learnt.

Where a volume lives is PVE's own answer, not a guess:
``GET /nodes/{node}/storage/{storage}/content/{volume}`` gives its path and
format from the storage configuration (what ``pvesm path`` prints: a file
under a directory storage's ``path``, ``/dev/<vg>/<lv>`` for LVM,
``/dev/zvol/<pool>/<name>`` for ZFS). That path is read as it is
(raw, qcow2, vmdk), into the export directory, sparse and hashed on the way:
through OpenSSH's ``ssh`` client running ``cat`` where this machine has one (the
path quoted for the remote shell; several times paramiko's throughput), else
paramiko's SFTP, with the same host key rule for both;
the core inspects the copy like any image from elsewhere before using it.
Storages without a path on the node (Ceph RBD, iSCSI LUNs) are NotSupported.
A move to another platform reads the same paths without this copy
(:mod:`anyvirt_proxmox.node_streams`).
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path
from typing import Any

from attrs import frozen

from anyvirt.errors import InvalidSpec, NotSupported, TaskFailed
from anyvirt.kit import ssh, streams
from anyvirt.model import Capability, ExportedDisk
from anyvirt.target import Secret, Target
from anyvirt.tasks import Job
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox.inventory import Inventory

OPTIONS = frozenset({"ssh", "ssh_key", "ssh_known_hosts"})
NODE = "{node}"
READABLE_FORMATS = ("raw", "qcow2", "vmdk")
WHY_NO_SSH = ("the Proxmox VE API has no way to download a VM disk: connect with ssh=user@node "
              "(e.g. ?ssh=root@pve1) so anyvirt reads the disks from the node's storage over SFTP")


def _plain(target: Target, key: str) -> str | None:
    value = target.option(key)
    if value is None:
        return None
    return value.reveal() if isinstance(value, Secret) else str(value)


@frozen
class NodeAccess:
    """How to reach a node over SSH: ``ssh=`` with ``{node}`` standing for the node's name."""

    spec: str
    key_filename: str | None
    known_hosts: Path | None
    timeout: float

    @classmethod
    def from_target(cls, target: Target) -> NodeAccess | None:
        """The connection's SSH option, checked before anything is sent; None without one."""
        spec = _plain(target, "ssh")
        key, known = _plain(target, "ssh_key"), _plain(target, "ssh_known_hosts")
        if spec is None:
            if key is not None or known is not None:
                raise InvalidSpec("ssh_key= and ssh_known_hosts= go with ssh=user@node")
            return None
        ssh.SshEndpoint.parse(spec.replace(NODE, "node"), "ssh")  # the form, before any login
        for name, path in (("ssh_key", key), ("ssh_known_hosts", known)):
            if path is not None and not Path(path).is_file():
                raise InvalidSpec(f"{name}=: no such file: {path}")
        return cls(spec=spec, key_filename=key, known_hosts=Path(known) if known else None,
                   timeout=float(target.timeout or 60.0))

    def endpoint(self, node: str) -> ssh.SshEndpoint:
        # a node name is a DNS label (PVE's rule), so it cannot change the form of the spec
        return ssh.SshEndpoint.parse(self.spec.replace(NODE, node), "ssh")


@frozen
class NodeVolume:
    disk_id: str  # the config key: scsi0, virtio1, ...
    volid: str
    path: str  # on the node
    format: str
    size: int  # what the guest sees
    bus: str | None


def volumes(inv: Inventory, vm_id: str, node: str) -> list[NodeVolume]:
    """The VM's disks with where PVE says each lives on ``node``; refused before any byte moves
    when one has no path there or a format no importer reads."""
    out = []
    for disk in cfg.disk_infos(inv.vm_config(vm_id)):
        volid = disk.path or ""
        path, fmt, size = locate(inv, node, volid, f"disk {disk.id} of VM {vm_id}", disk.format)
        out.append(NodeVolume(disk.id, volid, path, fmt, disk.size_bytes or size, disk.bus))
    return out


def locate(inv: Inventory, node: str, volid: str, which: str,
           fmt: str | None = None) -> tuple[str, str, int]:
    """(path on the node, format, size) of volume ``volid``, as PVE's storage API gives them;
    refused when it has no path there or a format no importer reads."""
    storage = volid.partition(":")[0]
    found: dict[str, Any] = inv.session.get(("nodes", node, "storage", storage, "content", volid),
                                            f"locating {which}")
    path, fmt = str(found.get("path", "")), str(found.get("format") or fmt or "raw")
    if not path.startswith("/"):
        raise NotSupported("proxmox", Capability.DISK_EXPORT,
                           f"{which} is on storage {storage!r}, which has no "
                           f"path on the node ({path or 'none'}): only file, LVM and ZFS storages "
                           "can be read over SSH")
    if fmt not in READABLE_FORMATS:
        raise NotSupported("proxmox", Capability.DISK_EXPORT,
                           f"{which} is {fmt!r}, not one of {READABLE_FORMATS}")
    return path, fmt, int(found.get("size") or 0)


def export_disks(inv: Inventory, access: NodeAccess, vm_id: str, dest_dir: Path,
                 job: Job) -> list[ExportedDisk]:
    """Copy every disk of a stopped VM from its node into ``dest_dir`` (sparse, hashed)."""
    node = inv.node_of(vm_id, refresh=True)
    found = volumes(inv, vm_id, node)
    endpoint = access.endpoint(node)
    out: list[ExportedDisk] = []
    with ssh.sftp(endpoint, key_filename=access.key_filename, known_hosts=access.known_hosts,
                  timeout=access.timeout) as session:
        for i, vol in enumerate(found):
            span = (100.0 * i / len(found), 100.0 * (i + 1) / len(found))
            out.append(_copy(session, access, endpoint, vol, vm_id, dest_dir, job, span))
    return out


def _copy(session: Any, access: NodeAccess, endpoint: ssh.SshEndpoint, vol: NodeVolume, vm_id: str,
          dest_dir: Path, job: Job, span: tuple[float, float]) -> ExportedDisk:
    """One volume: its size and kind from SFTP, its bytes through OpenSSH's ``ssh`` where this
    machine has it (several times faster), else SFTP."""
    what = f"reading disk {vol.disk_id} of VM {vm_id} from the node"
    try:
        with ssh.transfer_errors(what):
            info = session.stat(vol.path)
    except OSError as exc:
        raise TaskFailed(f"{what}: {vol.path} cannot be read there: {exc}") from exc
    regular = info.st_mode is not None and stat.S_ISREG(info.st_mode)
    # a file streams whole; a block device (an LV, a zvol) reports no size: the volume's own
    length = int(info.st_size or 0) if regular else vol.size
    target = dest_dir / f"{vol.disk_id}.{vol.format}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(ssh.transfer_errors(what))
        reader: Any
        if openssh_wanted():
            reader = stack.enter_context(ssh.streamed_file(
                endpoint, vol.path, key_filename=access.key_filename, known_hosts=access.known_hosts,
                timeout=access.timeout))
        else:
            reader = stack.enter_context(session.open(vol.path, "rb"))
            if regular:
                reader.prefetch(length)  # pipelined reads: one round trip does not wait for the next
        done = streams.copy_to_file(reader, target, size=length, job=job, what=what, span=span)
    return ExportedDisk(id=vol.disk_id, path=str(target), format=vol.format, size_bytes=vol.size,
                        bus=vol.bus, sha256=done.sha256, stream_bytes=done.bytes)


def openssh_wanted() -> bool:
    """Whether disk bytes go through OpenSSH's client (the tests switch it off to prove the
    SFTP path too)."""
    return ssh.openssh_available()


__all__ = ["OPTIONS", "WHY_NO_SSH", "NodeAccess", "NodeVolume", "export_disks", "locate",
           "openssh_wanted", "volumes"]
