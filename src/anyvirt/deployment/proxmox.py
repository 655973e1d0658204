"""Proxmox VE: the native cloud-init keys of a VM's config (PVE writes the seed
itself, on the ``<storage>:cloudinit`` drive).

What the native keys can say is narrower than an ``Identity``: one user
(``ciuser``, which PVE makes out of the distribution's default user, the one
cloud images give passwordless sudo), that user's keys and password hash, one
IPv4 and one IPv6 address per NIC (``ipconfigN``), and one set of name
servers and search domains for the VM. PVE names the guest after the VM and
derives the instance id itself. Anything beyond that needs a cloud-config
snippet of anyvirt's own on a storage with the ``snippets`` content type
(``cicustom``); :func:`compile_proxmox` returns why in ``needs_snippets``
(empty: the native keys carry the whole identity), so a driver without such a
storage raises ``NotSupported`` before anything is sent.

Formats follow the official PVE API schema: ``sshkeys`` is ``urlencoded`` (PVE
decodes it once more on its side: every byte but ``A-Za-z0-9-_.~`` is
%-escaped, spaces as ``%20`` never ``+``), ``nameserver`` an ``address-list``,
``searchdomain`` space-separated, ``ipconfigN`` a ``pve-qm-ipconfig`` property string.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from attrs import field, frozen

from anyvirt.deployment.documents import nic_networks
from anyvirt.deployment.identity import ResolvedIdentity, Static
from anyvirt.secret import Secret

#: PVE takes a cipassword matching this as hashed already and hashes anything else
#: (PVE::API2::Qemu, "same logic as in cloud-init"): a yescrypt ($y$) or $2b$ bcrypt hash
#: would be hashed again, locking the user out
PVE_HASHED = re.compile(r"^\$(?:[156]|2[ay])(\$.+){2}")


@frozen
class ProxmoxCloudInit:
    """The config keys to set (``ciuser``, ``cipassword``, ``sshkeys``, ``ipconfigN``,
    ``nameserver``, ``searchdomain``) and why a cicustom snippet would be needed."""

    #: ``cipassword`` stays a :class:`~anyvirt.target.Secret`: the session reveals it as it
    #: sends the request
    params: dict[str, str | Secret] = field(hash=False, repr=lambda params: repr(
        {key: "***" if key == "cipassword" else value for key, value in params.items()}))
    needs_snippets: tuple[str, ...] = ()


def _ipconfig(nic: Static | None) -> tuple[str, list[str]]:
    if nic is None:
        return "ip=dhcp", []
    parts, why = [], []
    for version, key, gateway_key, gateway in ((4, "ip", "gw", nic.gateway),
                                               (6, "ip6", "gw6", nic.gateway6)):
        addresses = nic.of_version(version)
        if len(addresses) > 1:
            why.append(f"a NIC has {len(addresses)} IPv{version} addresses; ipconfigN takes one")
        if addresses:
            parts.append(f"{key}={addresses[0]}")
        if gateway is not None:
            parts.append(f"{gateway_key}={gateway}")
    return ",".join(parts), why


def compile_proxmox(resolved: ResolvedIdentity, vm_name: str, nic_count: int) -> ProxmoxCloudInit:
    """The native keys for the VM named ``vm_name`` with ``nic_count`` NICs (net0..)."""
    identity = resolved.identity
    params: dict[str, str | Secret] = {}
    why: list[str] = []
    if identity.user_data is not None:
        why.append("user_data is extra cloud-config, which only a snippet carries")
    if resolved.hostname.lower() != vm_name.lower():  # host names know no case
        why.append(f"PVE names the guest after the VM ({vm_name!r}), not {resolved.hostname!r}")
    if identity.instance_id is not None:
        why.append("PVE derives the instance id itself")
    if len(identity.users) > 1:
        why.append(f"{len(identity.users)} users; PVE's ciuser is one")
    if identity.users:
        user = identity.users[0]
        params["ciuser"] = user.name
        if not user.sudo:
            why.append("PVE's ciuser is the distribution's default user, which has sudo")
        if user.password_hash is not None:
            if PVE_HASHED.match(user.password_hash.reveal()):
                params["cipassword"] = user.password_hash  # a Secret until the request is sent
            else:
                why.append("PVE would hash this password hash again (it keeps only $1$, $5$, $6$, $2a$ "
                           "and $2y$ hashes as they are)")
        if user.ssh_keys:
            params["sshkeys"] = quote("\n".join(user.ssh_keys), safe="")
    nameservers: set[tuple[str, ...]] = set()
    searches: set[tuple[str, ...]] = set()
    for index, nic in enumerate(nic_networks(resolved, nic_count)):
        static = nic if isinstance(nic, Static) else None
        params[f"ipconfig{index}"], nic_why = _ipconfig(static)
        why += nic_why
        if static is not None:
            if static.nameservers:
                nameservers.add(tuple(str(ip) for ip in static.nameservers))
            if static.search:
                searches.add(static.search)
    if len(nameservers) > 1 or len(searches) > 1:
        why.append("NICs have different name servers or search domains; PVE has one set per VM")
    if nameservers:
        params["nameserver"] = " ".join(sorted(nameservers)[0])
    if searches:
        params["searchdomain"] = " ".join(sorted(searches)[0])
    return ProxmoxCloudInit(params=params, needs_snippets=tuple(why))


__all__ = ["PVE_HASHED", "ProxmoxCloudInit", "compile_proxmox"]
