"""VM changes from vSphere's PropertyCollector: one long poll outstanding, nothing else.

The source logs in with a session of its own, creates a PropertyCollector of its
own (so its filter never meets the driver's listings) and one filter on a
container view of every VirtualMachine, for the paths a VMSummary needs. Then
``WaitForUpdatesEx`` with the version string the last answer gave: the server
answers when something changed (or after ``max_wait`` seconds with nothing),
and each answer carries only what changed.

The first call (version "") gives every VM: that is the snapshot. After a
lost connection the source builds a new filter and reads from version "" again
(a relist: a server need not keep what a dropped poll had already taken, and
vcsim does not), in the same session when it survived, else after logging in
again (expired, terminated, server restarted); the core emits only the
differences from what it had. Each relist reads every VM once; between them,
each answer carries only what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from anyvirt.errors import AuthenticationFailed, ConnectionFailed
from anyvirt.kit.changes import ChangeSink, ThreadedSource
from anyvirt.model import VMSummary
from anyvirt.target import Target
from anyvirt_vsphere.collector import Collector, Props
from anyvirt_vsphere.inventory import VM_PATHS, Inventory, vm_summary
from anyvirt_vsphere.sdk import vim, vmodl
from anyvirt_vsphere.session import Session, connection_lost

log = logging.getLogger(__name__)

PC = vmodl.query.PropertyCollector
#: the longest a poll stays outstanding; kept under the call timeout so that a silent
#: server and a quiet inventory are told apart
MAX_WAIT = 60


class PropertyUpdates(ThreadedSource):
    """``WaitForUpdatesEx`` on a container view of the VMs, as a change source."""

    pushed = True
    name = "anyvirt-vsphere-watch"

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target
        self.max_wait = max(1, min(MAX_WAIT, int(target.timeout) - 5))
        self._session: Session | None = None
        self._collector: Any = None  # the session's own PropertyCollector
        self._view: Any = None
        self._allowed: frozenset[str] | None = None  # a ?cluster=: the nodes it has
        self._version = ""
        self._props: dict[str, dict[str, Any]] = {}  # moid -> path -> value
        self._ids: dict[str, str] = {}  # moid -> the VM's id (instance UUID)
        #: sessions opened (the first, then one per re-login)
        self.logins = 0
        #: WaitForUpdatesEx calls made
        self.polls = 0

    # ------------------------------------------------------------ the source's thread
    def run(self, sink: ChangeSink) -> None:
        attempt = 0
        try:
            while not self.stopping.is_set():
                try:
                    if self._collector is None:
                        self._open()
                    self._poll(sink)
                    attempt = 0
                except Exception as exc:
                    if self.stopping.is_set():
                        return
                    if isinstance(exc, AuthenticationFailed):
                        raise  # a password that stopped working will not start again
                    # the next round reads everything again on a new filter (a relist: a
                    # server need not keep what a dropped poll had taken, vcsim does not),
                    # in the same session when the session survived
                    if _session_alive(exc):
                        self._forget_filter()
                    else:
                        self._forget_session()
                    sink.lost(exc)
                    self.stopping.wait(self.reconnect_delay(attempt))
                    attempt += 1
        finally:
            self._forget_session()

    def _open(self) -> None:
        session = self._session
        if session is None:
            session = Session(self.target)
            self._session = session
            session.open()
            self.logins += 1
        collector = Collector(session)
        inventory = Inventory(collector, self.target)
        inventory.check_cluster()
        if inventory.cluster_name is not None:
            self._allowed = frozenset(row.node.id for row in inventory.hosts())
        root = inventory.scope() or session.content.rootFolder
        content = session.content
        self._view = content.viewManager.CreateContainerView(root, [vim.VirtualMachine], True)
        pc = content.propertyCollector.CreatePropertyCollector()
        traverse = PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=self._view, skip=True, selectSet=[traverse])],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=list(VM_PATHS), all=False)],
        )
        pc.CreateFilter(spec, True)
        self._collector = pc
        self._version = ""

    def _poll(self, sink: ChangeSink) -> None:
        """One ``WaitForUpdatesEx``; its changes go to the sink."""
        first = self._version == ""
        if first:
            self._props.clear()
            self._ids.clear()
        options = PC.WaitOptions(maxWaitSeconds=self.max_wait)
        self.polls += 1
        update = self._collector.WaitForUpdatesEx(self._version, options)
        if update is None:
            return  # max_wait passed, nothing changed
        self._version = str(update.version)
        if first:
            self._apply(update, None)
            if update.truncated:
                self._version = ""  # the rest of the first answer comes with the same call
                return
            listing = [s for s in (self._summary(moid) for moid in self._props) if s is not None]
            self._ids = {moid: s.id for moid in self._props if (s := self._summary(moid))}
            sink.snapshot(listing)
            return
        self._apply(update, sink)

    def _apply(self, update: Any, sink: ChangeSink | None) -> None:
        """Apply each object update in order, telling ``sink`` after each one: two
        updates of one VM in one answer (off, then on again) are two changes."""
        for filter_update in update.filterSet or ():
            for change in filter_update.objectSet or ():
                moid = str(change.obj._moId)
                if change.kind == "leave":
                    self._props.pop(moid, None)
                else:
                    values = self._props.setdefault(moid, {})
                    _apply_changes(values, change.changeSet or ())
                if sink is not None:
                    self._tell(moid, sink)

    def _tell(self, moid: str, sink: ChangeSink) -> None:
        summary = self._summary(moid)
        known = self._ids.get(moid)
        if summary is not None:
            self._ids[moid] = summary.id
            sink.upsert(summary)
        elif known is not None:
            del self._ids[moid]
            sink.remove(known)

    def _summary(self, moid: str) -> VMSummary | None:
        values = self._props.get(moid)
        if values is None:
            return None
        summary = vm_summary(Props(ref=None, values=values))
        if summary is None or (self._allowed is not None and summary.node not in self._allowed):
            return None
        return summary

    # ------------------------------------------------------------ ending
    def interrupt(self) -> None:
        pc = self._collector
        if pc is not None:
            pc.CancelWaitForUpdates()  # the outstanding poll ends now, with RequestCanceled

    def _forget_filter(self) -> None:
        pc, view = self._collector, self._view
        self._collector = self._view = None
        self._version = ""
        session = self._session
        if session is None or not session.logged_in:
            return
        for cleanup in (getattr(pc, "Destroy", None), getattr(view, "DestroyView", None)):
            if cleanup is not None:
                try:
                    cleanup()
                except Exception:  # noqa: S112 - the session may be gone already
                    continue

    def _forget_session(self) -> None:
        self._forget_filter()
        session, self._session = self._session, None
        if session is not None:
            session.close()


def _apply_changes(values: dict[str, Any], changes: Iterable[Any]) -> None:
    for change in changes:
        if change.op in ("remove", "indirectRemove"):
            values.pop(change.name, None)
        else:
            values[change.name] = change.val


def _session_alive(exc: BaseException) -> bool:
    """True when the session may well still be there: the connection broke, not the
    login (no need to log in again)."""
    if isinstance(exc, vmodl.MethodFault):
        return not isinstance(exc, vim.fault.NotAuthenticated)
    return connection_lost(exc) or isinstance(exc, OSError | ConnectionFailed)
