"""Listing every domain in a fixed number of calls.

One ``getAllDomainStats(STATE|VCPU|BALLOON)`` gives every domain's state,
vCPUs and memory; when some domain is shut off, one
``listAllDomains(MANAGEDSAVE)`` says which of them are really suspended (have
a managed save image: the state's reason does not say so once the daemon has
restarted). No domain XML is read. Only when a driver leaves a stat group out
(the ``test:///`` driver reports ``state`` only) is ``dom.info()`` asked, per
domain, for the rest.

The loop over the records is the listing's own cost on top of the daemon's
answer, paid once per domain: it reads the stats by key, maps (state, reason)
through a table built once per pair, and builds each summary in one call.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import libvirt

from anyvirt.model import PowerState, VMSummary
from anyvirt_libvirt import templates
from anyvirt_libvirt.states import MANAGED_SAVE_RAW, normalise

STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON
)
_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF

#: (state, reason) -> (PowerState, raw word), filled as pairs are met (a handful exist)
_STATES: dict[tuple[int, int | None], tuple[PowerState, str]] = {}


def list_summaries(
    conn: libvirt.virConnect, node: str | None, template_ids: Container[str] = ()
) -> list[VMSummary]:
    """Every domain of the connection as a VMSummary (``template_ids``: known templates)."""
    records = conn.getAllDomainStats(STATS, 0)
    saved = _managed_saves(conn, records)
    out: list[VMSummary] = []
    append = out.append
    states = _STATES
    for dom, stats in records:
        try:
            key = (stats["state.state"], stats.get("state.reason"))
            cpus = stats["vcpu.current"]
            # the current size, as vm.info() and its spec say (the maximum is room to grow live)
            memory_kib = stats["balloon.current"]
        except KeyError:  # a stat group is missing: the per-domain call for this one
            key, cpus, memory_kib = _with_info(dom, stats)
        dom_id = dom.UUIDString()
        if key[0] == _SHUTOFF and dom_id in saved:
            state, raw = PowerState.SUSPENDED, MANAGED_SAVE_RAW
        else:
            found = states.get(key)
            if found is None:
                found = states[key] = normalise(key[0], False, key[1])
            state, raw = found
        append(VMSummary(dom_id, dom.name(), state, raw, cpus, memory_kib // 1024, node,
                         dom_id in template_ids))
    return out


def _managed_saves(conn: libvirt.virConnect, records: list[tuple[libvirt.virDomain, Any]]) -> set[str]:
    """The UUIDs of the domains with a managed save image; no call when none is shut off
    (only a shut-off domain can have one)."""
    if not any(stats.get("state.state") in (_SHUTOFF, None) for _dom, stats in records):
        return set()
    return {dom.UUIDString()
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)}


def _with_info(
    dom: libvirt.virDomain, stats: dict[str, Any]
) -> tuple[tuple[int, int | None], int, int]:
    """(state and reason, vCPUs, memory KiB), the groups the stats left out read by ``dom.info()``."""
    raw_state = stats.get("state.state")
    cpus = stats.get("vcpu.current")
    memory_kib = stats.get("balloon.current")
    info = dom.info()
    raw_state = info[0] if raw_state is None else raw_state
    cpus = info[3] if cpus is None else cpus
    memory_kib = info[2] if memory_kib is None else memory_kib
    return (int(raw_state), stats.get("state.reason")), int(cpus), int(memory_kib)


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
