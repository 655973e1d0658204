"""``host.vms.watch()`` on vcsim: ``WaitForUpdatesEx`` on a container view.

"Another tool" is plain pyVmomi on a session of the test's own (govc is not packaged
here). The simulator is this module's own: one test terminates the watch's session.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from anyvirt_vsphere.testbed.vcsim import Vcsim
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

import anyvirt
from anyvirt.host import Host
from anyvirt.model import PowerState
from anyvirt.testing.watch_changes import drain, next_change


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with Vcsim(vms=2, workdir=tmp_path_factory.mktemp("vcsim-watch")) as running:
        yield running


@pytest.fixture
def host(sim: Vcsim) -> Iterator[Host]:
    with anyvirt.connect(sim.anyvirt_uri_with_ca, password=sim.password) as h:
        yield h


@pytest.fixture
def tool(sim: Vcsim) -> Iterator[Any]:
    service = SmartConnect(host=sim.host, port=sim.port, user=sim.username, pwd=sim.password,
                           sslContext=sim.ssl_context(), connectionPoolTimeout=10)
    yield service
    Disconnect(service)


def by_name(service: Any, name: str) -> Any:
    content = service.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return next(vm for vm in view.view if vm.name == name)
    finally:
        view.DestroyView()


def test_watch_follows_pyvmomi_and_anyvirt_within_a_second_with_one_poll_idle(
    host: Host, tool: Any
) -> None:
    vm = host.vms.list()[0]
    with host.vms.watch() as watch:
        assert watch.pushed
        WaitForTask(by_name(tool, vm.name).PowerOffVM_Task())
        change, latency = next_change(watch)
        assert (change.kind, change.vm.id, change.fields) == ("changed", vm.id, {"state"})
        assert change.new is not None and change.new.state is PowerState.STOPPED
        assert latency < 1.0
        WaitForTask(by_name(tool, vm.name).Rename_Task(f"{vm.name}-renamed"))
        change, latency = next_change(watch)
        assert (change.kind, change.fields, change.vm.name) == ("changed", {"name"},
                                                                f"{vm.name}-renamed")
        assert latency < 1.0
        host.vms.get(vm.id).reconfigure(memory_mib=64)
        change, latency = next_change(watch)
        assert (change.kind, change.fields, latency < 1.0) == ("changed", {"memory_mib"}, True)
        # idle: the one poll outstanding is the only request
        source = watch._source
        polls = source.polls  # type: ignore[attr-defined]
        time.sleep(2.0)
        assert source.polls == polls  # type: ignore[attr-defined]
        host.vms.get(vm.id).start()
        change, latency = next_change(watch)
        assert (change.kind, change.fields, latency < 1.0) == ("changed", {"state"}, True)
        assert drain(watch, 0.5) == []


def _watch_session_key(tool: Any, known: set[str]) -> str:
    sessions = tool.RetrieveContent().sessionManager.sessionList
    new = [s.key for s in sessions if s.key not in known]
    assert len(new) == 1, f"sessions: {[s.key for s in sessions]} known: {known}"
    return str(new[0])


def test_a_session_dropped_mid_watch_loses_and_doubles_nothing(host: Host, tool: Any) -> None:
    manager = tool.RetrieveContent().sessionManager
    before = {s.key for s in manager.sessionList}
    first, second = host.vms.list()[:2]
    with host.vms.watch() as watch:
        key = _watch_session_key(tool, before)
        manager.TerminateSession([key])
        # changes the terminated session can no longer be told of
        WaitForTask(by_name(tool, first.name).PowerOffVM_Task())
        WaitForTask(by_name(tool, second.name).Rename_Task(f"{second.name}-x"))
        seen = drain(watch, 3.0)
        assert watch.stats.lost >= 1
        assert watch._source.logins == 2  # type: ignore[attr-defined]
        # and after the re-login, updates flow again
        WaitForTask(by_name(tool, first.name).PowerOnVM_Task())
        seen += drain(watch, 1.5)
    got = sorted((c.kind, c.vm.id, tuple(sorted(c.fields))) for c in seen)
    assert got == sorted([
        ("changed", first.id, ("state",)),
        ("changed", second.id, ("name",)),
        ("changed", first.id, ("state",)),
    ])
    assert [c.new.state for c in seen if c.vm.id == first.id and c.new] == [
        PowerState.STOPPED, PowerState.RUNNING]


def test_vms_created_and_destroyed_by_another_tool_are_added_and_removed(
    host: Host, tool: Any
) -> None:
    source = host.vms.list()[0]
    with host.vms.watch() as watch:
        vm = by_name(tool, source.name)
        spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(), powerOn=False)
        WaitForTask(vm.CloneVM_Task(folder=vm.parent, name="watch-clone", spec=spec))
        added, latency = next_change(watch)
        assert (added.kind, added.vm.name, latency < 1.0) == ("added", "watch-clone", True)
        WaitForTask(by_name(tool, "watch-clone").Destroy_Task())
        removed, latency = next_change(watch)
        assert (removed.kind, removed.vm.id, latency < 1.0) == ("removed", added.vm.id, True)


def test_close_cancels_the_outstanding_poll_at_once(host: Host) -> None:
    watch = host.vms.watch()
    time.sleep(0.3)  # the long poll is outstanding now
    started = time.monotonic()
    watch.close()
    assert time.monotonic() - started < 1.0
    assert not watch._source._thread.is_alive()  # type: ignore[attr-defined]


def test_updates_of_one_vm_in_one_answer_are_each_a_change(host: Host, tool: Any) -> None:
    first, second = host.vms.list()[:2]
    with host.vms.watch() as watch:
        for vm in (first, second):  # faster than the server's batching: one answer holds all
            native = by_name(tool, vm.name)
            WaitForTask(native.PowerOffVM_Task())
            WaitForTask(native.PowerOnVM_Task())
        seen = drain(watch, 1.5)
    assert [(c.vm.id, c.new.state if c.new else None) for c in seen] == [
        (first.id, PowerState.STOPPED), (first.id, PowerState.RUNNING),
        (second.id, PowerState.STOPPED), (second.id, PowerState.RUNNING),
    ]


class CuttableProxy:
    """A loopback TCP proxy whose connections the test can cut (a network blip)."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listen = socket.socket()
        self.listen.bind(("127.0.0.1", 0))
        self.listen.listen(8)
        self.port = self.listen.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listen.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        for conn in self.open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def close(self) -> None:
        self.cut()
        self.listen.close()


def test_a_cut_connection_relists_in_the_same_session_and_loses_nothing(
    sim: Vcsim, tool: Any
) -> None:
    proxy = CuttableProxy(sim.port)
    uri = sim.anyvirt_uri_with_ca.replace(f":{sim.port}", f":{proxy.port}")
    try:
        with anyvirt.connect(uri, password=sim.password) as host:
            vm = host.vms.list()[0]
            with host.vms.watch() as watch:
                time.sleep(0.3)  # the long poll is outstanding
                proxy.cut()
                WaitForTask(by_name(tool, vm.name).PowerOffVM_Task())
                seen = drain(watch, 3.0)
                WaitForTask(by_name(tool, vm.name).PowerOnVM_Task())
                seen += drain(watch, 1.5)
                assert watch.stats.lost >= 1
                assert watch._source.logins == 1  # type: ignore[attr-defined]
        assert [(c.vm.id, c.new.state if c.new else None) for c in seen] == [
            (vm.id, PowerState.STOPPED), (vm.id, PowerState.RUNNING)]
    finally:
        proxy.close()
