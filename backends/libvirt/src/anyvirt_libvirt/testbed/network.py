"""An isolated libvirt network with DHCP, for guests of a daemon with a private network namespace.

Isolated means no ``<forward>`` element: libvirt makes a bridge with the
host side's address and a dnsmasq serving DHCP on it, and no route or NAT to
anywhere else. Started on a :class:`~anyvirt_libvirt.testbed.daemon.LibvirtDaemon`
made with ``private_network=True``, the bridge and dnsmasq live in that
daemon's network namespace only, so guest traffic never reaches the machine's
own network namespace::

    with LibvirtDaemon(private_network=True) as daemon:
        conn = daemon.open()
        net = start_isolated_network(conn)            # IsolatedNetwork(); 192.168.200.0/24
        ... <interface type='network'><source network='anyvirt-isolated'/> ...
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import Any

from attrs import field, frozen

__all__ = ["IsolatedNetwork", "start_isolated_network"]

_MAX_BRIDGE_NAME = 15  # IFNAMSIZ - 1
_DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"


def _bridge_name(_: object, __: object, value: str) -> None:
    if not (0 < len(value) <= _MAX_BRIDGE_NAME) or not value.replace("-", "").isalnum():
        raise ValueError(f"bridge name {value!r}: 1-{_MAX_BRIDGE_NAME} letters, digits or '-'")


@frozen
class IsolatedNetwork:
    """A libvirt network with no forwarding: ``gateway`` is the bridge's own address.

    DHCP hands out ``dhcp_first``..``dhcp_last`` (host numbers within ``subnet``).
    """

    name: str = "anyvirt-isolated"
    bridge: str = field(default="avbr-iso0", validator=_bridge_name)
    subnet: ipaddress.IPv4Network = field(default=ipaddress.IPv4Network("192.168.200.0/24"),
                                          converter=ipaddress.IPv4Network)
    dhcp_first: int = 10
    dhcp_last: int = 250

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    def address(self, host_number: int) -> ipaddress.IPv4Address:
        return self.subnet.network_address + host_number

    def xml(self) -> str:
        net = ET.Element("network")
        ET.SubElement(net, "name").text = self.name
        ET.SubElement(net, "bridge", name=self.bridge, stp="off", delay="0")
        ip = ET.SubElement(net, "ip", address=str(self.gateway), netmask=str(self.subnet.netmask))
        dhcp = ET.SubElement(ip, "dhcp")
        ET.SubElement(dhcp, "range", start=str(self.address(self.dhcp_first)),
                      end=str(self.address(self.dhcp_last)))
        # dnsmasq pings an address before offering it (seconds per lease); on a
        # network whose every address it hands out itself, that check buys nothing.
        options = ET.SubElement(net, f"{{{_DNSMASQ_NS}}}options")
        ET.SubElement(options, f"{{{_DNSMASQ_NS}}}option", value="no-ping")
        return ET.tostring(net, encoding="unicode")


def start_isolated_network(conn: Any, network: IsolatedNetwork | None = None) -> IsolatedNetwork:
    """Define (if needed) and start ``network`` on the libvirt connection ``conn``; return it."""
    network = IsolatedNetwork() if network is None else network
    defined = {virnet.name(): virnet for virnet in conn.listAllNetworks(0)}
    virnet = defined.get(network.name) or conn.networkDefineXML(network.xml())
    if not virnet.isActive():
        virnet.create()
    return network
