"""Deployment on vSphere: the identity as cloud-init's VMware datasource reads it
(``guestinfo.*`` keys of the VM's extraConfig), and what VMware Tools report of the guest.

Everything is read through the PropertyCollector with explicit paths: vcsim 0.24.2 panics
on a per-attribute fetch of an unset property (TESTBEDS.md, bug 1), and it is one round
trip anyway.
"""

from __future__ import annotations

import base64
import binascii
import gzip
from collections.abc import Iterable
from typing import Any

from anyvirt.addresses import ReportedAddress
from anyvirt.deployment import ResolvedIdentity, compile_vsphere
from anyvirt.deployment.vsphere import KEYS
from anyvirt.tasks import Job
from anyvirt_vsphere.inventory import Inventory
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.tasks import run_task

#: the documents the datasource reads; each has its ``.encoding`` key
DOCUMENTS = ("guestinfo.metadata", "guestinfo.userdata", "guestinfo.vendordata")
#: every guestinfo key of a seed: the ones anyvirt writes and vendordata, which the
#: datasource would read too and a clone may inherit from its source
SEED_KEYS = frozenset(KEYS) | {"guestinfo.vendordata", "guestinfo.vendordata.encoding"}


def nic_macs(devices: Iterable[Any]) -> list[str]:
    """The MACs of the VM's NICs, in device order (the order compile_vsphere matches)."""
    return [str(dev.macAddress) for dev in devices
            if isinstance(dev, vim.vm.device.VirtualEthernetCard) and dev.macAddress]


def apply_identity(inventory: Inventory, vm_id: str, identity: ResolvedIdentity, job: Job) -> None:
    """Set the four guestinfo keys (compile_vsphere checks their size) in one reconfigure.

    A clone inherits its source's extraConfig: keys compiled here overwrite it, and an
    inherited vendordata is removed (an empty value removes an extraConfig option), so the
    guest sees this identity alone. The source's own config is never touched."""
    props = inventory.vm_props(vm_id, ("config.hardware.device", "config.extraConfig"))
    values = compile_vsphere(identity, nic_macs(props.get("config.hardware.device") or ()))
    inherited = {str(option.key) for option in props.get("config.extraConfig") or ()}
    stale = sorted((inherited & SEED_KEYS) - set(values))
    spec = vim.vm.ConfigSpec()
    spec.extraConfig = [vim.option.OptionValue(key=key, value=value) for key, value in values.items()]
    spec.extraConfig += [vim.option.OptionValue(key=key, value="") for key in stale]
    run_task(inventory.collector, lambda: props.ref.ReconfigVM_Task(spec=spec), job,
             f"setting the identity of VM {vm_id}")


def decode(encoding: str, value: str) -> str:
    """A guestinfo value as the VMware datasource decodes it (base64, gzip+base64, or plain)."""
    kind = encoding.strip().lower()
    if kind in ("", "none"):
        return value
    gzipped = kind in ("gzip+base64", "gz+b64")
    if not gzipped and kind not in ("base64", "b64"):
        raise ValueError(f"unknown guestinfo encoding {encoding!r}")
    try:
        raw = base64.b64decode(value, validate=False)
        return (gzip.decompress(raw) if gzipped else raw).decode("utf-8")
    except (binascii.Error, OSError, EOFError, UnicodeDecodeError) as err:
        raise ValueError(f"guestinfo value is not {encoding}: {err}") from err


def read_identity(inventory: Inventory, vm_id: str) -> dict[str, str] | None:
    """The guestinfo documents the VM holds, decoded: ``{"guestinfo.metadata": json, ...}``."""
    props = inventory.vm_props(vm_id, ("config.extraConfig",))
    options = {str(option.key): str(option.value or "")
               for option in props.get("config.extraConfig") or ()}
    found = {key: _readable(options.get(f"{key}.encoding", ""), options[key])
             for key in DOCUMENTS if options.get(key)}
    return found or None


def _readable(encoding: str, value: str) -> str:
    # someone else's value in an encoding the datasource would not read either: shown as set
    try:
        return decode(encoding, value)
    except ValueError:
        return value


def reported_addresses(guest_net: Iterable[Any]) -> list[ReportedAddress]:
    """``guest.net`` (VMware Tools' view of each NIC) as reported addresses, unfiltered.

    ``ipConfig.ipAddress`` carries the prefix; older Tools fill only ``ipAddress`` (strings,
    no prefix), used when there is no ipConfig."""
    found: list[ReportedAddress] = []
    for nic in guest_net:
        mac = str(getattr(nic, "macAddress", None) or "")
        if not mac:
            continue  # a guest interface VMware does not map to a virtual NIC
        config = getattr(getattr(nic, "ipConfig", None), "ipAddress", None)
        if config:
            found += [ReportedAddress(mac, str(entry.ipAddress), _prefix(entry.prefixLength), "agent")
                      for entry in config if entry.ipAddress]
        else:
            found += [ReportedAddress(mac, str(ip), None, "agent")
                      for ip in getattr(nic, "ipAddress", None) or () if ip]
    return found


def _prefix(value: Any) -> int | None:
    return int(value) if isinstance(value, int) else None


def guest_addresses(inventory: Inventory, vm_id: str) -> list[ReportedAddress]:
    props = inventory.vm_props(vm_id, ("guest.net",))
    return reported_addresses(props.get("guest.net") or ())


def guest_reports_up(inventory: Inventory, vm_id: str) -> bool | None:
    """True when VMware Tools run in the guest; None when the guest has no Tools at all
    (nothing in it could ever say so), False otherwise."""
    props = inventory.vm_props(vm_id, ("guest.toolsRunningStatus", "guest.toolsVersionStatus2"))
    if props.get("guest.toolsVersionStatus2") == "guestToolsNotInstalled":
        return None
    status = props.get("guest.toolsRunningStatus")
    if status is None:
        return None
    return bool(status == "guestToolsRunning")


__all__ = ["apply_identity", "decode", "guest_addresses", "guest_reports_up", "nic_macs",
           "read_identity", "reported_addresses"]
