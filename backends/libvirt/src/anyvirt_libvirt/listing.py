"""Listing every domain in a fixed number of calls.

One ``getAllDomainStats(STATE|VCPU|BALLOON)`` gives every domain's state,
vCPUs and memory; when some domain is shut off, one
``listAllDomains(MANAGEDSAVE)`` says which of them are really suspended (have
a managed save image: the state's reason does not say so once the daemon has
restarted). No domain XML is read. Only when a driver leaves a stat group out
(the ``test:///`` driver reports ``state`` only) is ``dom.info()`` asked, per
domain, for the rest.

The managed-save question costs the daemon a walk over every domain (about
25 ms at 10,000 domains, 7% of the stats call). When the connection's last
listing met a shut-off domain, this one asks it on a second thread while the
stats call runs (both calls release the GIL and the remote driver multiplexes
one connection), so its time hides under the stats call's; otherwise it asks
only once the stats show a shut-off domain, so a listing of running domains
stays one call.

The loop over the records is the listing's own cost on top of the daemon's
answer, paid once per domain: it reads the stats by key, maps (state, reason)
through a table built once per pair, and builds each summary with
``summary_row`` (no attrs ``__init__``).
"""

from __future__ import annotations

import threading
from collections.abc import Container
from typing import Any

import libvirt

from anyvirt.model import PowerState, VMSummary, summary_row
from anyvirt_libvirt import templates
from anyvirt_libvirt.states import MANAGED_SAVE_RAW, normalise

STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON
)
_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF

#: (state, reason) -> (PowerState, raw word), filled as pairs are met (a handful exist)
_STATES: dict[tuple[int, int | None], tuple[PowerState, str]] = {}


class Lister:
    """The listing of one connection, remembering whether its last listing met a shut-off
    domain (then the next one asks for the managed saves alongside the stats)."""

    def __init__(self) -> None:
        self.saw_shut_off = False

    def summaries(
        self, conn: libvirt.virConnect, node: str | None, template_ids: Container[str] = ()
    ) -> list[VMSummary]:
        """Every domain of the connection as a VMSummary (``template_ids``: known templates)."""
        ahead = _AskedAhead(conn) if self.saw_shut_off else None
        try:
            records = conn.getAllDomainStats(STATS, 0)
        except BaseException:
            if ahead is not None:
                ahead.wait()  # its answer (or error) is moot: the stats call's error is raised
            raise
        saved = ahead.answer() if ahead is not None else None
        shut_off = any(stats.get("state.state") in (_SHUTOFF, None) for _dom, stats in records)
        self.saw_shut_off = shut_off
        if saved is None:
            saved = _managed_saves(conn) if shut_off else set()
        return _rows(records, saved, node, template_ids)


class _AskedAhead:
    """``listAllDomains(MANAGEDSAVE)`` on a thread of its own, started now."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self._conn = conn
        self._saved: set[str] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._ask, name="anyvirt-managed-saves", daemon=True)
        self._thread.start()

    def _ask(self) -> None:
        try:
            self._saved = _managed_saves(self._conn)
        except BaseException as exc:  # handed to the listing's thread, raised there
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def answer(self) -> set[str]:
        """The UUIDs with a managed save image (waits; raises what the call raised)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._saved is not None
        return self._saved


def _rows(
    records: list[tuple[libvirt.virDomain, Any]], saved: set[str], node: str | None,
    template_ids: Container[str],
) -> list[VMSummary]:
    out: list[VMSummary] = []
    append = out.append
    states = _STATES
    row = summary_row
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
        append(row(dom_id, dom.name(), state, raw, cpus, memory_kib // 1024, node,
                   dom_id in template_ids))
    return out


def _managed_saves(conn: libvirt.virConnect) -> set[str]:
    """The UUIDs of the domains with a managed save image (only a shut-off domain has one)."""
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


def new_summary(dom: libvirt.virDomain, node: str | None, cpus: int, memory_kib: int) -> VMSummary:
    """The summary of a domain anyvirt has just defined (a clone) from what it defined
    (:func:`anyvirt_libvirt.domxml.current_size`): shut off, without a managed save, not a
    template. No round trip, where :func:`summary_of` makes four."""
    state, raw = normalise(libvirt.VIR_DOMAIN_SHUTOFF, False, None)
    return VMSummary(
        id=dom.UUIDString(),
        name=dom.name(),
        state=state,
        raw_state=raw,
        cpus=cpus,
        memory_mib=memory_kib // 1024,
        node=node,
        template=False,
    )
