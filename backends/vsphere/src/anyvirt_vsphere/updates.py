"""VM changes from vSphere's PropertyCollector: one long poll outstanding, nothing else.

The source logs in with a session of its own, creates a PropertyCollector of its
own (so its filter never meets the driver's listings) and one filter on a
container view of every VirtualMachine, for the paths a VMSummary needs. Then
``WaitForUpdatesEx`` with the version string the last answer gave: the server
answers when something changed (or after ``max_wait`` seconds with nothing),
and each answer carries only what changed.

The first call (version "") gives every VM: that is the snapshot. A lost
connection is retried on the same collector with the same version, which
resumes where the watch was; when the session itself is gone (expired,
terminated, server restarted), the collector went with it: the source logs in
again, builds a new filter and starts from version "" again, and the core
emits only the differences from what it had.
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
from anyvirt_vsphere.errors import translate
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
                    if not _resumable(exc):
                        self._forget_session()  # the next round logs in and starts over
                    sink.lost(exc)
                    self.stopping.wait(self.reconnect_delay(attempt))
                    attempt += 1
        finally:
            self._forget_session()

    def _open(self) -> None:
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
        touched = self._apply(update)
        self._version = str(update.version)
        if first and not update.truncated:
            listing = [s for s in (self._summary(moid) for moid in self._props) if s is not None]
            self._ids = {moid: s.id for moid in self._props if (s := self._summary(moid))}
            sink.snapshot(listing)
            return
        if first:
            self._version = ""  # a truncated first answer: the rest comes with the same call
            return
        for moid in touched:
            summary = self._summary(moid)
            known = self._ids.get(moid)
            if summary is not None:
                self._ids[moid] = summary.id
                sink.upsert(summary)
            elif known is not None:
                del self._ids[moid]
                sink.remove(known)

    def _apply(self, update: Any) -> list[str]:
        touched: list[str] = []
        for filter_update in update.filterSet or ():
            for change in filter_update.objectSet or ():
                moid = str(change.obj._moId)
                if change.kind == "leave":
                    self._props.pop(moid, None)
                else:
                    values = self._props.setdefault(moid, {})
                    _apply_changes(values, change.changeSet or ())
                touched.append(moid)
        return list(dict.fromkeys(touched))

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

    def _forget_session(self) -> None:
        session, pc, view = self._session, self._collector, self._view
        self._session = self._collector = self._view = None
        self._version = ""
        if session is None:
            return
        for cleanup in (getattr(pc, "Destroy", None), getattr(view, "DestroyView", None)):
            if cleanup is not None and session.logged_in:
                try:
                    cleanup()
                except Exception:  # noqa: S112 - the session may be gone already
                    continue
        session.close()


def _apply_changes(values: dict[str, Any], changes: Iterable[Any]) -> None:
    for change in changes:
        if change.op in ("remove", "indirectRemove"):
            values.pop(change.name, None)
        else:
            values[change.name] = change.val


def _resumable(exc: BaseException) -> bool:
    """True when the session (and its collector) may well still be there: the
    connection broke, not the login. The same version is asked again."""
    if isinstance(exc, vim.fault.NotAuthenticated | vmodl.fault.ManagedObjectNotFound):
        return False
    if isinstance(exc, vim.fault.InvalidCollectorVersion | vmodl.fault.RequestCanceled):
        return False
    if connection_lost(exc) or isinstance(exc, OSError):
        return True
    cause = translate(exc, "watching VMs")
    return isinstance(cause, ConnectionFailed) and not isinstance(exc, vmodl.MethodFault)
