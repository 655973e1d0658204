"""The one address filter every backend uses: own NICs only, routable only, best source first.

Pure logic, no platform: the inputs are what platforms report (strings).
"""

from __future__ import annotations

import ipaddress

import pytest

from anyvirt.addresses import GuestAddress, ReportedAddress, normalize_mac, routable, select_addresses

NIC1 = "52:54:00:00:00:01"
NIC2 = "52:54:00:00:00:02"


def reported(mac: str, ip: str, prefix: int | None = 24, source: str = "lease") -> ReportedAddress:
    return ReportedAddress(mac, ip, prefix, source)


def ips(found: list[GuestAddress]) -> list[str]:
    return [str(a.ip) for a in found]


def test_keeps_routable_addresses_of_the_vms_own_nics_as_typed_values() -> None:
    found = select_addresses([reported(NIC1, "192.168.200.57", 24)], [NIC1])
    assert found == [GuestAddress(NIC1, "192.168.200.57", 24, "lease")]
    assert isinstance(found[0].ip, ipaddress.IPv4Address)
    assert found[0].interface == ipaddress.ip_interface("192.168.200.57/24")


@pytest.mark.parametrize("ip", [
    "127.0.0.1", "::1",                     # loopback
    "fe80::5054:ff:fe00:1", "fe80::1%eth0",  # IPv6 link-local, with or without a scope
    "169.254.10.20",                        # APIPA (IPv4 link-local)
    "0.0.0.0", "::",                        # unspecified
    "224.0.0.251", "ff02::1",               # multicast
])
def test_drops_addresses_nobody_outside_the_guest_can_reach(ip: str) -> None:
    assert select_addresses([reported(NIC1, ip, 64, "agent")], [NIC1]) == []


def test_drops_addresses_of_other_macs() -> None:
    # a container bridge inside the guest (docker0) and the guest's loopback (all zeros)
    noise = [reported("02:42:ac:11:00:01", "172.17.0.1", 16, "agent"),
             reported("00:00:00:00:00:00", "10.0.0.1", 8, "agent")]
    assert select_addresses([*noise, reported(NIC1, "10.1.2.3")], [NIC1]) == [
        GuestAddress(NIC1, "10.1.2.3", 24, "lease")]


def test_orders_by_source_lease_then_agent_then_arp_then_nic_order() -> None:
    found = select_addresses([
        reported(NIC1, "10.0.0.3", None, "arp"),
        reported(NIC2, "10.0.0.2", 24, "agent"),
        reported(NIC1, "2001:db8::5", 64, "agent"),
        reported(NIC2, "10.0.0.1", 24, "lease"),
        reported(NIC1, "10.0.0.4", 24, "lease"),
    ], [NIC1, NIC2])
    assert [(str(a.ip), a.source) for a in found] == [
        ("10.0.0.4", "lease"), ("10.0.0.1", "lease"),
        ("2001:db8::5", "agent"), ("10.0.0.2", "agent"),
        ("10.0.0.3", "arp"),
    ]


def test_one_address_from_several_sources_is_kept_once_from_the_best() -> None:
    found = select_addresses([
        reported(NIC1, "10.0.0.9", None, "arp"),
        reported(NIC1, "10.0.0.9", 24, "agent"),
        reported(NIC1, "10.0.0.9", 24, "lease"),
    ], [NIC1])
    assert found == [GuestAddress(NIC1, "10.0.0.9", 24, "lease")]


def test_macs_match_whatever_their_spelling() -> None:
    found = select_addresses([reported("52-54-00-00-00-01", "10.0.0.1"),
                              reported("525400000002", "10.0.0.2")],
                             ["52:54:00:00:00:01".upper(), NIC2])
    assert [(a.mac, str(a.ip)) for a in found] == [(NIC1, "10.0.0.1"), (NIC2, "10.0.0.2")]


def test_unreadable_reports_are_dropped_not_trusted() -> None:
    found = select_addresses([
        reported(NIC1, "not-an-ip"),
        reported("zz:zz", "10.0.0.1"),
        reported(NIC1, "10.0.0.2", 33),          # no such IPv4 prefix
        reported(NIC1, "10.0.0.3", 24, "dns"),  # no such source
        reported(NIC1, "10.0.0.4"),
    ], [NIC1, "garbage"])
    assert ips(found) == ["10.0.0.4"]


def test_no_nics_means_no_addresses() -> None:
    assert select_addresses([reported(NIC1, "10.0.0.1")], []) == []


def test_the_value_type_checks_itself() -> None:
    with pytest.raises(ValueError, match="source 'magic'"):
        GuestAddress(NIC1, "10.0.0.1", 24, "magic")
    with pytest.raises(ValueError, match="not a MAC"):
        GuestAddress("nope", "10.0.0.1", 24, "lease")
    with pytest.raises(ValueError, match="/129"):
        GuestAddress(NIC1, "10.0.0.1", 129, "lease")
    unknown_prefix = GuestAddress(NIC1, "2001:db8::1", None, "arp")
    assert unknown_prefix.interface == ipaddress.ip_interface("2001:db8::1/128")


def test_helpers() -> None:
    assert normalize_mac(" 52:54:00:AB:CD:EF ") == "52:54:00:ab:cd:ef"
    assert normalize_mac("52:54:00:ab:cd") is None
    assert routable(ipaddress.ip_address("192.168.200.57"))
    assert not routable(ipaddress.ip_address("169.254.1.1"))
