"""A libvirt domain's guest addresses: DHCP leases, then the guest agent, then ARP.

libvirt reads each source through ``virDomain.interfaceAddresses``:

* ``lease``: the DHCP leases of the libvirt networks the domain's NICs are on
  (the network's dnsmasq handed them out; cheap, no guest cooperation);
* ``agent``: the QEMU guest agent's view of the guest's interfaces (needs an
  agent channel and a running agent; reports loopback and guest-side bridges
  too, which :func:`anyvirt.addresses.select_addresses` drops);
* ``arp``: the host's neighbour table for the domain's MACs (no prefix).

A later source is consulted only while some NIC of the domain has no
address yet, so a guest on a libvirt network costs one cheap lease lookup and
a guest agent that hangs is never waited for when the leases already answer.
A source that is unavailable here (no agent configured, agent not
responding, the domain not running, a driver without that source) adds
nothing; a missing domain or a broken connection raises the anyvirt error.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from anyvirt.addresses import GuestAddress, ReportedAddress, normalize_mac, select_addresses
from anyvirt_libvirt.errors import translate

__all__ = ["domain_addresses", "nic_macs"]

_SOURCES = (
    ("lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
    ("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
    ("arp", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP),
)
#: error codes meaning "this source has nothing to say here", not a failure of the call
_SOURCE_UNAVAILABLE = {
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_AGENT_UNSYNCED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,  # "QEMU guest agent is not configured"
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_OPERATION_INVALID,  # "domain is not running"
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
}
#: and, for the neighbour table only, libvirt's failure to read it: libvirt 9.0 rejects the
#: kernel's netlink reply to its neighbour dump in some network namespaces ("internal
#: error: wrong nlmsg len", seen in the testbed's isolated daemon before any guest has an
#: entry). An unreadable ARP table is a fallback with nothing to say, not a failed call:
#: the leases and the agent still answer.
_ARP_UNAVAILABLE = _SOURCE_UNAVAILABLE | {libvirt.VIR_ERR_INTERNAL_ERROR}


def nic_macs(dom: libvirt.virDomain) -> list[str]:
    """The MACs of the domain's NICs, in the order of its (live) configuration."""
    root = ET.fromstring(dom.XMLDesc(0))  # noqa: S314 - XML from the libvirt daemon
    macs = []
    for mac in root.findall("devices/interface/mac"):
        normalized = normalize_mac(mac.get("address") or "")
        if normalized is not None:
            macs.append(normalized)
    return macs


def _reported(interfaces: dict[str, dict[str, object]], source: str) -> list[ReportedAddress]:
    """libvirt's ``{name: {'hwaddr': mac, 'addrs': [{'addr', 'prefix', 'type'}]}}`` as plain reports."""
    found = []
    for details in interfaces.values():
        mac = details.get("hwaddr")
        addrs = details.get("addrs")
        if not isinstance(mac, str) or not isinstance(addrs, list):
            continue
        for entry in addrs:
            if not isinstance(entry, dict) or not isinstance(entry.get("addr"), str):
                continue
            prefix = entry.get("prefix")
            # the neighbour table knows no prefix (libvirt says 0): unknown, not /0
            known = prefix if isinstance(prefix, int) and source != "arp" else None
            found.append(ReportedAddress(mac, entry["addr"], known, source))
    return found


def _from_source(dom: libvirt.virDomain, flag: int, source: str) -> list[ReportedAddress]:
    try:
        interfaces = dom.interfaceAddresses(flag, 0)
    except libvirt.libvirtError as exc:
        unavailable = _ARP_UNAVAILABLE if source == "arp" else _SOURCE_UNAVAILABLE
        if exc.get_error_code() in unavailable:
            return []
        raise translate(exc, f"reading the {source} addresses of domain {dom.name()!r}") from exc
    return _reported(interfaces or {}, source)


def domain_addresses(dom: libvirt.virDomain) -> list[GuestAddress]:
    """The routable addresses of ``dom``'s own NICs, matched by MAC, best source first."""
    try:
        macs = nic_macs(dom)
    except libvirt.libvirtError as exc:
        raise translate(exc, "reading a domain's NICs") from exc
    if not macs:
        return []
    reported: list[ReportedAddress] = []
    for source, flag in _SOURCES:
        covered = {address.mac for address in select_addresses(reported, macs)}
        if covered >= set(macs):
            break
        reported += _from_source(dom, flag, source)
    return select_addresses(reported, macs)
