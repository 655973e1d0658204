"""The three cloud-init documents every platform carries, as plain values:
meta-data, user-data (cloud-config text) and network-config (version 2).

NoCloud writes them as files, the VMware datasource reads them from guestinfo;
Proxmox writes its own from native keys (``anyvirt.deployment.proxmox``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from anyvirt.deployment.cloudconfig import SUDO_ALL, merge, parse_user_data, render_cloud_config
from anyvirt.deployment.identity import Dhcp, NicNetwork, ResolvedIdentity, Static, User
from anyvirt.validation import invalid

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
#: with no MAC known, DHCP on every Ethernet NIC by name (eth*, ens*, enp*)
ALL_ETHERNET = {"name": "e*"}


def meta_data(resolved: ResolvedIdentity) -> dict[str, str]:
    return {"instance-id": resolved.instance_id, "local-hostname": resolved.hostname}


def _user_entry(user: User) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": user.name}
    if user.ssh_keys:
        entry["ssh_authorized_keys"] = list(user.ssh_keys)
    if user.sudo:
        entry["sudo"] = SUDO_ALL
    if user.password_hash is not None:
        entry["hashed_passwd"] = user.password_hash.reveal()  # the document is what is sent
        entry["lock_passwd"] = False
    else:
        entry["lock_passwd"] = True
    return entry


def cloud_config(resolved: ResolvedIdentity) -> dict[str, Any]:
    """The merged cloud-config mapping (the rule: ``anyvirt.deployment.cloudconfig``)."""
    identity = resolved.identity
    owned: dict[str, Any] = {"hostname": resolved.short_hostname}
    if "." in resolved.hostname:
        owned["fqdn"] = resolved.hostname
    extra = parse_user_data(identity.user_data) if identity.user_data is not None else {}
    return merge(owned, (_user_entry(user) for user in identity.users), extra)


def user_data(resolved: ResolvedIdentity) -> str:
    """The user-data file: ``#cloud-config`` and the merged mapping as YAML."""
    return render_cloud_config(cloud_config(resolved))


def _checked_macs(macs: Sequence[str]) -> list[str]:
    out = []
    for mac in macs:
        if not isinstance(mac, str) or not _MAC.fullmatch(mac.lower()):
            raise invalid("MAC address", "format", f"{str(mac)[:40]!r} is not a MAC address")
        out.append(mac.lower())
    if len(set(out)) != len(out):
        raise invalid("MAC address", "duplicate", "two NICs have the same MAC address")
    return out


def _static(nic: Static) -> dict[str, Any]:
    entry: dict[str, Any] = {"dhcp4": False, "addresses": [str(iface) for iface in nic.addresses]}
    # gateway4/gateway6 rather than default routes: Debian 12's cloud-init (22.4) reads
    # "routes: [{to: '::/0'}]" as ::/64 and does not know "to: default"
    if nic.gateway is not None:
        entry["gateway4"] = str(nic.gateway)
    if nic.gateway6 is not None:
        entry["gateway6"] = str(nic.gateway6)
    dns: dict[str, list[str]] = {}
    if nic.nameservers:
        dns["addresses"] = [str(ip) for ip in nic.nameservers]
    if nic.search:
        dns["search"] = list(nic.search)
    if dns:
        entry["nameservers"] = dns
    return entry


def nic_networks(resolved: ResolvedIdentity, nic_count: int) -> list[NicNetwork]:
    """One ``Dhcp``/``Static`` per NIC of a VM with ``nic_count`` NICs."""
    given = list(resolved.identity.network)
    if len(given) > nic_count:
        raise invalid("network", "length",
                      f"the identity configures {len(given)} NICs but the VM has {nic_count}")
    return given + [Dhcp()] * (nic_count - len(given))


def network_config(resolved: ResolvedIdentity, macs: Sequence[str] = ()) -> dict[str, Any]:
    """Network config version 2. ``macs``: the VM's NICs' MAC addresses in NIC order;
    each NIC is matched by its MAC. Without MACs only DHCP can be said (on every
    Ethernet NIC, matched by name); static addresses need the MACs."""
    checked = _checked_macs(macs)
    if not checked:
        if any(isinstance(nic, Static) for nic in resolved.identity.network):
            raise invalid("network", "mac", "static addresses need the VM's NIC MAC addresses to match "
                                            "them to NICs")
        return {"version": 2, "ethernets": {"all": {"match": dict(ALL_ETHERNET), "dhcp4": True}}}
    ethernets: dict[str, Any] = {}
    for index, (mac, nic) in enumerate(zip(checked, nic_networks(resolved, len(checked)), strict=True)):
        entry: dict[str, Any] = {"match": {"macaddress": mac}}
        entry.update(_static(nic) if isinstance(nic, Static) else {"dhcp4": True})
        ethernets[f"nic{index}"] = entry
    return {"version": 2, "ethernets": ethernets}


__all__ = ["cloud_config", "meta_data", "network_config", "nic_networks", "user_data"]
