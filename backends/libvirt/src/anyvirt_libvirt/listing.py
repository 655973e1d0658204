"""Listing every domain in a fixed number of calls.

One ``getAllDomainStats(STATE|VCPU|BALLOON)`` gives every domain's state,
vCPUs and memory; one ``listAllDomains(MANAGEDSAVE)`` says which shut-off
domains are really suspended (have a managed save image). No domain XML is
read. Only when a driver leaves a stat group out (the ``test:///`` driver
reports ``state`` only) is ``dom.info()`` asked, per domain, for the rest.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import libvirt

from anyvirt.model import VMSummary, evolve
from anyvirt_libvirt import templates
from anyvirt_libvirt.states import normalise

STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON
)


def list_summaries(
    conn: libvirt.virConnect, node: str | None, template_ids: Container[str] = ()
) -> list[VMSummary]:
    """Every domain of the connection as a VMSummary (``template_ids``: known templates)."""
    records = conn.getAllDomainStats(STATS, 0)
    saved = {
        dom.UUIDString()
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)
    }
    out = []
    for dom, stats in records:
        dom_id = dom.UUIDString()
        summary = summary_from_stats(dom, dom_id, stats, dom_id in saved, node)
        if dom_id in template_ids:
            summary = evolve(summary, template=True)
        out.append(summary)
    return out


def summary_from_stats(
    dom: libvirt.virDomain, dom_id: str, stats: dict[str, Any], managed_save: bool, node: str | None
) -> VMSummary:
    """A VMSummary from one domain's stats record (``dom`` carries name and UUID locally)."""
    raw_state = stats.get("state.state")
    cpus = stats.get("vcpu.current")
    # the current size, as vm.info() and its spec say (the maximum is room to grow live)
    memory_kib = stats.get("balloon.current")
    if raw_state is None or cpus is None or memory_kib is None:
        # a stat group is missing: fall back to the per-domain call for this one
        info = dom.info()
        raw_state = info[0] if raw_state is None else raw_state
        cpus = info[3] if cpus is None else cpus
        memory_kib = info[2] if memory_kib is None else memory_kib
    state, raw = normalise(int(raw_state), managed_save, stats.get("state.reason"))
    return VMSummary(
        id=dom_id,
        name=dom.name(),
        state=state,
        raw_state=raw,
        cpus=int(cpus),
        memory_mib=int(memory_kib) // 1024,
        node=node,
    )


def summary_of(dom: libvirt.virDomain, node: str | None) -> VMSummary:
    """One domain's summary (``vm.refresh()``): ``dom.info()``, its state reason, the
    managed-save flag and the template mark (the truth, read from the domain)."""
    template = templates.is_marked(dom)
    info = dom.info()
    reason = dom.state(0)[1]
    saved = False
    if info[0] == libvirt.VIR_DOMAIN_SHUTOFF:
        try:
            saved = bool(dom.hasManagedSaveImage(0))
        except libvirt.libvirtError:
            saved = False
    state, raw = normalise(info[0], saved, reason)
    return VMSummary(
        id=dom.UUIDString(),
        name=dom.name(),
        state=state,
        raw_state=raw,
        cpus=int(info[3]),
        memory_mib=int(info[2]) // 1024,
        node=node,
        template=template,
    )
