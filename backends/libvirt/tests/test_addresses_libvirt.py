"""libvirt's address reader on libvirt's own test driver (in-process, real libvirt code).

The test driver reports one lease-style address for its domain's NIC from every
source; the real sources on real guests are proven in test_linux_guest.py.
"""

from __future__ import annotations

import ipaddress

import libvirt
from anyvirt_libvirt.addresses import domain_addresses, nic_macs

from anyvirt.addresses import GuestAddress


def test_addresses_of_the_test_drivers_domain_come_from_its_lease() -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.lookupByName("test")
        assert nic_macs(dom) == ["aa:bb:cc:dd:ee:ff"]
        assert domain_addresses(dom) == [
            GuestAddress("aa:bb:cc:dd:ee:ff", ipaddress.ip_address("192.168.122.3"), 24, "lease")]
    finally:
        conn.close()
