"""Templates: a VM marked in its own domain metadata (``<anyvirt:vm template='yes'>``).

libvirt has no templates; the mark is anyvirt's. The core refuses to start a
template; its linked clones sit directly on its disks (a template never
writes to them), and ``unmark`` makes it a VM again.

The mark is the truth, read from the domain by ``vm.refresh()`` and
``vm.info()``. The listing cannot read it without one call per domain, so a
connection reads the marks of its shut-off domains once when it opens and
keeps them up to date as it marks and unmarks; a mark set by another client
meanwhile shows in the listing after the next connection (and in
``refresh()`` at once, which is what the core checks before a start).
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET

import libvirt

from anyvirt_libvirt.domxml import NS

_KEY = "anyvirt"


def anyvirt_metadata(dom: libvirt.virDomain, flags: int = 0) -> ET.Element | None:
    """The domain's anyvirt metadata element (``NS``), or None when it has none."""
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS, flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_SUPPORT):
            return None
        raise
    return ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon


def is_marked(dom: libvirt.virDomain) -> bool:
    element = anyvirt_metadata(dom)
    return element is not None and element.get("template") == "yes"


def set_mark(dom: libvirt.virDomain, on: bool) -> None:
    """Mark or unmark a (stopped) domain in its persistent definition."""
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    element = anyvirt_metadata(dom, flags)
    if element is None:
        element = ET.Element("vm", {"guest-os": "other"})
    element.attrib.pop("template", None)
    if on:
        element.set("template", "yes")
    xml = ET.tostring(element, encoding="unicode")
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, _KEY, NS, flags)


class TemplateIndex:
    """The ids of the templates this connection knows of (for the listing)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def load(self, conn: libvirt.virConnect) -> None:
        found = set()
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE):
            try:
                if is_marked(dom):
                    found.add(dom.UUIDString())
            except libvirt.libvirtError:
                continue  # undefined meanwhile
        with self._lock:
            self._ids = found

    def note(self, vm_id: str, template: bool) -> None:
        with self._lock:
            if template:
                self._ids.add(vm_id)
            else:
                self._ids.discard(vm_id)

    def ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids)
