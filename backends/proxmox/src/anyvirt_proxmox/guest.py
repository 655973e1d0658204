"""Deployment on Proxmox VE: the identity as PVE's own cloud-init keys, and what the QEMU
guest agent reports of the guest.

PVE writes the seed itself, on a ``<storage>:cloudinit`` drive, from the VM's config keys
(``ciuser``, ``sshkeys``, ``ipconfigN``, ...): setting the keys is all it takes. Arbitrary
cloud-config needs a ``cicustom`` snippet, a file on a storage with the ``snippets`` content
type; PVE's API cannot write one (its upload takes ``iso``, ``vztmpl`` and ``import`` content
only), so this connection never declares ``IDENTITY_USER_DATA`` and an identity the native
keys cannot carry is refused with ``NotSupported`` before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from anyvirt.addresses import ReportedAddress
from anyvirt.deployment import ResolvedIdentity, compile_proxmox
from anyvirt.errors import AnyvirtError, InvalidState, NotSupported
from anyvirt.model import Capability
from anyvirt.target import Secret
from anyvirt.tasks import Job
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.tasks import UPID, wait_task

#: the config keys PVE builds the seed from (ipconfigN besides): a clone inherits them
CLOUD_INIT_KEYS = frozenset({"ciuser", "cipassword", "sshkeys", "nameserver", "searchdomain",
                             "cicustom", "citype", "ciupgrade"})
IPCONFIG_KEY = re.compile(r"^ipconfig\d+$")
#: where a new cloud-init drive goes, first free: ide2 as PVE's own tools put it
DRIVE_SLOTS = ("ide2", "ide3", "ide0", "ide1")
WHY_NO_USER_DATA = ("arbitrary cloud-config needs a cicustom snippet on a 'snippets' storage, and "
                    "PVE's API cannot write one (its upload takes iso, vztmpl and import content)")


def is_cloud_init_key(key: str) -> bool:
    return key in CLOUD_INIT_KEYS or bool(IPCONFIG_KEY.match(key))


def cloud_init_drive(config: dict[str, Any]) -> str | None:
    """The key of the VM's cloud-init drive (``local-lvm:vm-100-cloudinit,media=cdrom``)."""
    for key, value in config.items():
        match = cfg.DRIVE_KEY.match(key)
        if match and "cloudinit" in str(value).split(",", 1)[0]:
            return key
    return None


def _drive_storage(inv: Inventory, node: str, config: dict[str, Any]) -> str:
    """The storage of the VM's first disk (the cloud-init volume sits with its disks), else
    the node's first storage for VM images."""
    for disk in cfg.disk_infos(config):  # CD-ROMs are not among them
        if disk.storage:
            return disk.storage
    storages = inv.node_storages(node)
    if not storages:
        raise InvalidState(f"node {node!r} has no storage for VM images to hold the cloud-init drive")
    return str(storages[0]["storage"])


def identity_params(inv: Inventory, vm_id: str, identity: ResolvedIdentity,
                    config: dict[str, Any]) -> tuple[dict[str, str | Secret], list[str]]:
    """The config keys to set and the inherited cloud-init keys to delete, or NotSupported
    when the native keys cannot say the whole identity."""
    nics = len(cfg.nic_infos(config))
    compiled = compile_proxmox(identity, str(config.get("name") or ""), nics)
    if compiled.needs_snippets:
        raise NotSupported("proxmox", Capability.IDENTITY_USER_DATA,
                           f"{'; '.join(compiled.needs_snippets)}: {WHY_NO_USER_DATA}")
    params = dict(compiled.params)
    if cloud_init_drive(config) is None:
        slot = next((key for key in DRIVE_SLOTS if key not in config), None)
        if slot is None:
            raise InvalidState(f"VM {vm_id} has no free IDE slot for a cloud-init drive "
                               f"({', '.join(DRIVE_SLOTS)} are taken)")
        params[slot] = f"{_drive_storage(inv, inv.node_of(vm_id), config)}:cloudinit"
    # what the VM inherited from its source and this identity does not set: removed, so the
    # guest sees this identity alone (the source's config is never touched)
    stale = sorted(key for key in config if is_cloud_init_key(key) and key not in params)
    return params, stale


def apply_identity(inv: Inventory, vm_id: str, identity: ResolvedIdentity, job: Job) -> None:
    job.check()
    config = inv.vm_config(vm_id)
    params, stale = identity_params(inv, vm_id, identity, config)
    node = inv.node_of(vm_id)
    what = f"setting the identity of VM {vm_id}"
    # POST, PVE's asynchronous form: allocating the cloud-init volume is storage work. The
    # digest makes a concurrent change an error rather than a lost update.
    answer = inv.session.post(("nodes", node, "qemu", cfg.vmid(vm_id), "config"), what,
                              digest=config.get("digest"), delete=",".join(stale) or None, **params)
    if isinstance(answer, str) and UPID.match(answer):
        wait_task(inv.session, answer, job, what)


def read_identity(inv: Inventory, vm_id: str) -> dict[str, str] | None:
    """The cloud-init keys of the VM's config and its cloud-init drive, as PVE holds them,
    and the host name PVE gives the guest: the VM's own name (PVE has no hostname key; its
    cloud-init drive carries the VM name, which is why a hostname other than it needs a
    snippet)."""
    config = inv.vm_config(vm_id)
    found = {key: str(value) for key, value in config.items() if is_cloud_init_key(key)}
    drive = cloud_init_drive(config)
    if drive is None and not found:
        return None
    if drive is not None:
        found[drive] = str(config[drive])
    if config.get("name"):
        found["hostname"] = str(config["name"])
    return found


def reported_addresses(interfaces: Iterable[Any]) -> list[ReportedAddress]:
    """The agent's ``network-get-interfaces`` result (QGA's GuestNetworkInterface list),
    unfiltered: the core keeps the VM's own NICs' routable addresses."""
    found: list[ReportedAddress] = []
    for interface in interfaces:
        if not isinstance(interface, dict):
            continue
        mac = str(interface.get("hardware-address") or "")
        for entry in interface.get("ip-addresses") or ():
            if isinstance(entry, dict) and entry.get("ip-address"):
                prefix = entry.get("prefix")
                found.append(ReportedAddress(mac, str(entry["ip-address"]),
                                             prefix if isinstance(prefix, int) else None, "agent"))
    return found


def _agent_configured(config: dict[str, Any]) -> bool:
    enabled, props = cfg.split_props(str(config.get("agent", "0")))
    return (props.get("enabled", enabled) or "0") in ("1", "true", "yes", "on")


def _agent_silent(exc: AnyvirtError) -> bool:
    """PVE's answers while no agent answers: the VM is not running, the agent is not (yet)
    running in it, or it does not answer in time."""
    text = str(exc)
    return ("not running" in text or "got timeout" in text
            or "guest agent is not running" in text)


def guest_addresses(inv: Inventory, vm_id: str) -> list[ReportedAddress]:
    if not _agent_configured(inv.vm_config(vm_id)):
        return []  # no agent channel: PVE has no other source of the guest's addresses
    try:
        answer = inv.vm_get(vm_id, ("agent", "network-get-interfaces"),
                            f"reading the guest addresses of VM {vm_id}")
    except AnyvirtError as exc:
        if _agent_silent(exc):
            return []
        raise
    result = answer.get("result") if isinstance(answer, dict) else None
    return reported_addresses(result if isinstance(result, list) else ())


def guest_reports_up(inv: Inventory, vm_id: str) -> bool | None:
    """True when the guest agent answers a ping; None when the VM has no agent configured."""
    if not _agent_configured(inv.vm_config(vm_id)):
        return None
    node = inv.node_of(vm_id)
    try:
        inv.session.post(("nodes", node, "qemu", cfg.vmid(vm_id), "agent", "ping"),
                         f"pinging the guest agent of VM {vm_id}")
    except AnyvirtError as exc:
        if _agent_silent(exc):
            return False
        raise
    return True


__all__ = ["apply_identity", "cloud_init_drive", "guest_addresses", "guest_reports_up",
           "identity_params", "read_identity", "reported_addresses"]
