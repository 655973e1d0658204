"""Reading properties the fast way: the PropertyCollector with explicit path sets.

A listing is one ``RetrievePropertiesEx`` over a container view, continued with
``ContinueRetrievePropertiesEx`` while the server hands back a token: a fixed
number of round trips however many objects there are. Container views are
created once per session and kept (the server keeps them up to date), so a
repeated listing costs a single request.

Objects can vanish between the view's enumeration and the property read (a VM
destroyed mid-listing, or a stale reference left by the simulator): such
objects come back without properties or with a ``ManagedObjectNotFound`` in
their ``missingSet``, and are skipped here rather than failing the listing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from anyvirt_vsphere import fastxml
from anyvirt_vsphere.sdk import vim, vmodl
from anyvirt_vsphere.session import Session

PC = vmodl.query.PropertyCollector
#: objects per page; the server may return fewer and a continuation token
PAGE_SIZE = 1000


@attrs.frozen
class Props:
    """One object's properties, keyed by the requested paths (unset paths are absent)."""

    ref: Any
    values: Mapping[str, Any]

    @property
    def moid(self) -> str:
        return str(self.ref._moId)

    def get(self, path: str, default: Any = None) -> Any:
        return self.values.get(path, default)


class Collector:
    """PropertyCollector helpers bound to one session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._views: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._views_generation = -1

    # ------------------------------------------------------------ container views
    def _view(self, root: Any, kinds: Sequence[type]) -> Any:
        """A cached recursive container view of ``kinds`` under ``root``."""
        if self._views_generation != self.session.generation:
            self._views.clear()  # views die with the session that made them
            self._views_generation = self.session.generation
        key = (str(root._moId), tuple(sorted(k.__name__ for k in kinds)))
        view = self._views.get(key)
        if view is None:
            manager = self.session.content.viewManager
            view = manager.CreateContainerView(root, list(kinds), True)
            self._views[key] = view
        return view

    def forget_views(self) -> None:
        """Destroy cached views (best effort, before logout)."""
        for view in self._views.values():
            try:
                view.DestroyView()
            except Exception:  # noqa: S112 - the session may already be gone
                continue
        self._views.clear()

    def scan(
        self,
        paths: Mapping[type, Sequence[str]],
        *,
        root: Any = None,
        what: str = "listing",
    ) -> list[Props]:
        """Every object of the given types under ``root`` (default: the root folder)."""

        def read() -> list[Props]:
            start = root if root is not None else self.session.content.rootFolder
            view = self._view(start, list(paths))
            traverse = PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
            obj_spec = PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])
            # a missing view must fail loudly (ManagedObjectNotFound): it means the
            # session that owned it is gone, and an empty listing would be a lie
            return self._retrieve([obj_spec], paths, report_missing=False)

        try:
            return self.session.call(read, what, read=True)
        except Exception as exc:
            if not isinstance(exc.__cause__, vmodl.fault.ManagedObjectNotFound):
                raise
        # a cached view that the server dropped: make a fresh one, once
        self._views.clear()
        return self.session.call(read, what, read=True)

    def objects(
        self,
        refs: Iterable[Any],
        paths: Mapping[type, Sequence[str]],
        *,
        what: str = "reading properties",
    ) -> list[Props]:
        """Properties of explicit objects; vanished objects are left out."""
        specs = [PC.ObjectSpec(obj=ref, skip=False) for ref in refs]
        if not specs:
            return []
        return self.session.call(lambda: self._retrieve(specs, paths), what, read=True)

    def one(self, ref: Any, kind: type, paths: Sequence[str], *, what: str) -> Props | None:
        """Properties of one object, or None if it no longer exists."""
        found = self.objects([ref], {kind: paths}, what=what)
        return found[0] if found else None

    # ------------------------------------------------------------ the call itself
    def _retrieve(
        self,
        obj_specs: list[Any],
        paths: Mapping[type, Sequence[str]],
        report_missing: bool = True,
    ) -> list[Props]:
        prop_specs = [PC.PropertySpec(type=kind, pathSet=list(p), all=False) for kind, p in paths.items()]
        spec = PC.FilterSpec(
            objectSet=obj_specs, propSet=prop_specs, reportMissingObjectsInResults=report_missing
        )
        pc = self.session.content.propertyCollector
        options = PC.RetrieveOptions(maxObjects=PAGE_SIZE)
        fast = self._retrieve_fast(pc, [[spec], options])
        if fast is not None:
            return fast
        out: list[Props] = []
        result = pc.RetrievePropertiesEx([spec], options)
        while result is not None:
            out.extend(_contents(result.objects))
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(result.token)
        return out

    def _retrieve_fast(self, pc: Any, args: list[Any]) -> list[Props] | None:
        """Every page through the fast reader, or None to redo the whole read through
        pyVmomi (a read: repeating it changes nothing)."""
        stub = self.session.stub
        page = fastxml.retrieve(stub, pc, "RetrievePropertiesEx", args)
        out: list[Props] = []
        while page is not None:
            rows, token = page
            out.extend(Props(ref=ref, values=values) for ref, values in rows)
            if not token:
                return out
            page = fastxml.retrieve(stub, pc, "ContinueRetrievePropertiesEx", [token])
        return None


def _contents(objects: Iterable[Any] | None) -> list[Props]:
    out: list[Props] = []
    for content in objects or ():
        vanished = False
        for missing in content.missingSet or ():
            fault = missing.fault.fault if missing.fault is not None else None
            if isinstance(fault, vim.fault.NotAuthenticated):
                raise fault  # the session is gone: let Session.call log in again
            if isinstance(fault, vmodl.fault.ManagedObjectNotFound):
                vanished = True
        if vanished:
            continue
        values = {prop.name: prop.val for prop in content.propSet or ()}
        out.append(Props(ref=content.obj, values=values))
    return out
