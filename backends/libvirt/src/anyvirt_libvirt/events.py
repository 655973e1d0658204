"""VM changes from libvirt's domain events: nothing is asked while nothing changes.

The source opens a connection of its own (its callbacks and its reconnects are
its own business, and closing it ends them), registers for the domain events
that follow what a listing shows (lifecycle: define, undefine, start, stop,
suspend, resume, rename; balloon, device and metadata changes: memory, vCPUs,
the template mark), then lists once. An event only marks its domain dirty, in
libvirt's event loop thread, which must never wait on the daemon; the source's
own thread re-reads each dirty domain (a few calls per change, whatever the
fleet) and hands over the summary, or a removal if the domain is gone.

When the daemon goes away (a restart), libvirt's close callback wakes the
thread: it reconnects with growing delays, registers again, lists again, and
the core emits only what differs from what it had. Registering before listing
means a change made in between is seen twice at worst, and the core drops the
repeat.
"""

from __future__ import annotations

import logging
import threading
import weakref
from contextlib import suppress

import libvirt

from anyvirt.errors import AnyvirtError, ConnectionFailed, NotFound
from anyvirt.kit.changes import ChangeSink, ThreadedSource
from anyvirt.model import PowerState, VMSummary
from anyvirt_libvirt import listing
from anyvirt_libvirt.connection import Link
from anyvirt_libvirt.templates import TemplateIndex

log = logging.getLogger(__name__)

#: the state a lifecycle event leaves a domain in (for one gone before it was read)
EVENT_STATES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: PowerState.SUSPENDED,
}

LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
#: the events that can change what a VMSummary says
EVENT_IDS = (
    LIFECYCLE,
    libvirt.VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
    libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
    libvirt.VIR_DOMAIN_EVENT_ID_TUNABLE,
)


class DomainEvents(ThreadedSource):
    """One libvirt connection's domain events, as a change source."""

    pushed = True
    name = "anyvirt-libvirt-watch"

    def __init__(self, link: Link, node: str | None, templates: TemplateIndex,
                 resync: float | None = None) -> None:
        super().__init__()
        self.link = link
        self.node = node
        self.templates = templates
        self.resync = resync
        self._wake = threading.Condition()
        # by UUID, one re-read per domain however many events; None: look it up by UUID
        self._dirty: dict[str, libvirt.virDomain | None] = {}
        # the state the last lifecycle event of each dirty domain implies, for a domain
        # that is gone before it could be read
        self._last_event: dict[str, PowerState] = {}
        self._reported: set[str] = set()  # the domains the sink has been told of
        self._dropped = False
        link.on_drop = self._on_drop
        #: connections opened again after a drop (for tests and the bench)
        self.reconnects = 0

    # ------------------------------------------------------------ libvirt's thread
    def _heard(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, *_details: object) -> None:
        uuid = dom.UUIDString()  # local: the handle carries it
        with self._wake:
            self._dirty[uuid] = dom
            self._wake.notify()

    def _heard_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int,
                         _detail: int, _opaque: object) -> None:
        if event != libvirt.VIR_DOMAIN_EVENT_UNDEFINED:  # a removal says nothing of being there
            with self._wake:
                self._last_event[dom.UUIDString()] = EVENT_STATES.get(event, PowerState.UNKNOWN)
        self._heard(conn, dom)

    def touch(self, uuid: str) -> None:
        """Re-read a domain that changed without an event (see :class:`LocalHints`)."""
        with self._wake:
            self._dirty.setdefault(uuid, None)
            self._wake.notify()

    def _on_drop(self) -> None:
        with self._wake:
            self._dropped = True
            self._wake.notify()

    # ------------------------------------------------------------ the source's thread
    def run(self, sink: ChangeSink) -> None:
        attempt = 0
        try:
            while not self.stopping.is_set():
                try:
                    self._watch(sink)
                except (ConnectionFailed, libvirt.libvirtError) as exc:
                    if self.stopping.is_set():
                        return
                    sink.lost(exc)
                    self.link.mark_dropped()
                    self.stopping.wait(self.reconnect_delay(attempt))
                    attempt += 1
                    self.reconnects += 1
        finally:
            self.link.close()

    def _watch(self, sink: ChangeSink) -> None:
        """Register, list, then follow the events until the connection drops or we stop."""
        with self._wake:
            self._dirty.clear()
            self._last_event.clear()
            self._dropped = False
        with self.link.call("watching VMs") as conn:
            callbacks = [conn.domainEventRegisterAny(
                None, event, self._heard_lifecycle if event == LIFECYCLE else self._heard, None)
                for event in EVENT_IDS]
        try:
            self._relist(sink)
            self._follow(sink)
        finally:
            if not self._dropped:
                with suppress(libvirt.libvirtError, ConnectionFailed), \
                        self.link.call("ending the watch") as conn:
                    for callback in callbacks:
                        conn.domainEventDeregisterAny(callback)

    def _relist(self, sink: ChangeSink) -> None:
        with self.link.call("listing VMs") as conn:
            vms = listing.Lister().summaries(conn, self.node, self.templates.ids())
        self._reported = {vm.id for vm in vms}
        sink.snapshot(vms)

    def _follow(self, sink: ChangeSink) -> None:
        while True:
            with self._wake:
                woken = self._wake.wait_for(lambda: bool(self._dirty) or self._dropped
                                            or self.stopping.is_set(), self.resync)
                if self.stopping.is_set():
                    return
                if self._dropped:
                    raise ConnectionFailed("the libvirt connection closed (daemon restarted?)")
                if woken:
                    uuid = next(iter(self._dirty))
                    dom = self._dirty.pop(uuid)
                    last_event = self._last_event.pop(uuid, None)
            if woken:
                self._reread(uuid, dom, last_event, sink)
            else:
                self._relist(sink)  # the caller's safety-net interval passed

    def _reread(self, uuid: str, dom: libvirt.virDomain | None, last_event: PowerState | None,
                sink: ChangeSink) -> None:
        try:
            with self.link.call(f"reading VM {uuid}") as conn:
                if dom is None:
                    dom = conn.lookupByUUIDString(uuid)
                summary = listing.summary_of(dom, self.node)
        except NotFound:
            self.templates.note(uuid, False)
            if uuid not in self._reported and last_event is not None and dom is not None:
                # made and removed again before it could be read: its events say it was
                # there, so it is given as added (CPUs and memory unread) and removed
                sink.upsert(VMSummary(id=uuid, name=dom.name(), state=last_event,
                                      raw_state="gone", node=self.node))
            self._reported.discard(uuid)
            sink.remove(uuid)
            return
        except ConnectionFailed:
            raise
        except AnyvirtError:  # a domain between two states: its next event re-reads it
            log.debug("re-reading domain %s after an event", uuid, exc_info=True)
            return
        self.templates.note(uuid, summary.template)
        self._reported.add(uuid)
        sink.upsert(summary)

    def interrupt(self) -> None:
        with self._wake:
            self._wake.notify_all()


class LocalHints:
    """A driver's open event sources, told when the driver itself made a change that
    libvirt announces with no event (CPUs or memory of a stopped domain, a template
    mark), so a watch follows every anyvirt change all the same."""

    def __init__(self) -> None:
        self._sources: weakref.WeakSet[DomainEvents] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, source: DomainEvents) -> None:
        with self._lock:
            self._sources.add(source)

    def touch(self, uuid: str) -> None:
        with self._lock:
            sources = list(self._sources)
        for source in sources:
            if not source.stopping.is_set():
                source.touch(uuid)
