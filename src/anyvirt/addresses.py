"""Guest addresses: the value type, and the one filter every backend puts its findings through.

Platforms report a guest's addresses from several sources and with the same
noise (loopback, link-local ``fe80::``, APIPA ``169.254/16``, addresses of a
container bridge inside the guest, the same address from two sources). Each
backend only collects what its platform reports, as :class:`ReportedAddress`
values, and :func:`select_addresses` decides: it keeps the addresses of the
VM's own NICs (matched by MAC) that can be reached from outside the guest,
best source first. A leaf module: it imports nothing of anyvirt's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Final

from attrs import field, frozen

__all__ = [
    "SOURCES",
    "GuestAddress",
    "IPAddress",
    "ReportedAddress",
    "normalize_mac",
    "routable",
    "select_addresses",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SOURCES: Final = ("lease", "agent", "arp")
"""Where an address came from, most trustworthy first: the platform's DHCP
lease for the NIC, the guest's own agent, the host's ARP/neighbour table."""

_MAC_GROUPS = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
_MAC_BARE = re.compile(r"^[0-9a-f]{12}$")


def normalize_mac(mac: str) -> str | None:
    """``52:54:00:ab:cd:ef`` for any common spelling (``-`` separated, bare hex, any case).

    ``None`` when ``mac`` is not a MAC address: platform output is data, and an
    unreadable entry is dropped rather than trusted.
    """
    text = mac.strip().lower()
    if _MAC_GROUPS.match(text):
        return text.replace("-", ":")
    if _MAC_BARE.match(text):
        return ":".join(text[i:i + 2] for i in range(0, 12, 2))
    return None


def _mac(value: str) -> str:
    normalized = normalize_mac(value)
    if normalized is None:
        raise ValueError(f"not a MAC address: {value!r}")
    return normalized


def _source(_: object, __: object, value: str) -> None:
    if value not in SOURCES:
        raise ValueError(f"address source {value!r} is not one of {', '.join(SOURCES)}")


def _prefix(instance: GuestAddress, _: object, value: int | None) -> None:
    if value is not None and not 0 <= value <= instance.ip.max_prefixlen:
        raise ValueError(f"prefix /{value} does not fit {instance.ip}")


@frozen
class GuestAddress:
    """One address of a VM's NIC: ``ip`` is an :mod:`ipaddress` object.

    ``prefix`` is ``None`` where the source does not tell it (ARP).
    """

    mac: str = field(converter=_mac)
    ip: IPAddress = field(converter=ipaddress.ip_address)
    prefix: int | None = field(validator=_prefix)
    source: str = field(validator=_source)

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """``ip/prefix`` as an interface (the address alone, ``/32`` or ``/128``, without a prefix)."""
        prefix = self.ip.max_prefixlen if self.prefix is None else self.prefix
        return ipaddress.ip_interface(f"{self.ip}/{prefix}")


@frozen
class ReportedAddress:
    """What a platform said, as it said it (strings): :func:`select_addresses` judges it."""

    mac: str
    ip: str
    prefix: int | None
    source: str


def routable(ip: IPAddress) -> bool:
    """True for an address another machine could reach the guest at.

    Loopback, link-local (IPv6 ``fe80::/10``; IPv4 ``169.254/16``, APIPA),
    unspecified and multicast addresses are not.
    """
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def _parse(reported: ReportedAddress) -> GuestAddress | None:
    try:
        # A "fe80::1%eth0" scope suffix names the guest's interface: not ours to keep.
        return GuestAddress(reported.mac, reported.ip.split("%", 1)[0], reported.prefix,
                            reported.source)
    except (ValueError, TypeError):
        return None


def select_addresses(reported: Iterable[ReportedAddress], nic_macs: Sequence[str]) -> list[GuestAddress]:
    """The routable addresses of the VM's own NICs, best first.

    Kept: addresses whose MAC is one of ``nic_macs`` (the VM's NICs as its
    configuration says: a guest-side bridge or container interface has
    another MAC) and that :func:`routable` accepts. Unreadable entries are
    dropped. The same IP on the same NIC from several sources is kept once,
    from the best source. Order: by source (:data:`SOURCES`: lease, agent,
    ARP), then by the NIC's place in ``nic_macs``, then as reported.
    """
    nic_order = {mac: index for index, mac in enumerate(filter(None, map(normalize_mac, nic_macs)))}
    source_rank = {source: rank for rank, source in enumerate(SOURCES)}
    best: dict[tuple[str, IPAddress], tuple[tuple[int, int, int], GuestAddress]] = {}
    for seen, entry in enumerate(reported):
        address = _parse(entry)
        if address is None or address.mac not in nic_order or not routable(address.ip):
            continue
        key = (source_rank[address.source], nic_order[address.mac], seen)
        known = best.get((address.mac, address.ip))
        if known is None or key < known[0]:
            best[(address.mac, address.ip)] = (key, address)
    return [address for _, address in sorted(best.values(), key=lambda item: item[0])]
