"""A domain's serial console through ``virDomainOpenConsole``, as ``virsh console`` reaches it.

The stream is non-blocking and read by polling: that needs no libvirt event loop in the
user's process, and works the same on a local, a remote (``+ssh``) and the embedded driver.
"""

from __future__ import annotations

import contextlib
import threading
import time

import libvirt

from anyvirt.errors import ConsoleClosed, InvalidState, Timeout
from anyvirt.kit.console import POLL_INTERVAL, poll_read
from anyvirt_libvirt.errors import translate
from anyvirt_libvirt.site import Site

#: one read's most: a serial line at full speed makes far less between two polls
_CHUNK = 64 * 1024
#: what libvirt-python's non-blocking stream calls return when they would block
_WOULD_BLOCK = -2


class DomainConsole:
    """An attached console: the stream, and the domain's name for messages."""

    def __init__(self, stream: libvirt.virStream, name: str) -> None:
        self._stream = stream
        self._name = name
        self._lock = threading.Lock()  # one stream call at a time: a reader and a typist
        self._ended = False
        self._released = False

    def read(self, timeout: float) -> bytes:
        return poll_read(self._try_read, timeout, f"VM {self._name!r}")

    def _try_read(self) -> bytes | None:
        with self._lock:
            if self._ended:
                return None
            try:
                got = self._stream.recv(_CHUNK)
            except libvirt.libvirtError:
                self._ended = True  # the domain stopped, or the connection went
                return None
        if got == _WOULD_BLOCK:
            return b""
        if isinstance(got, bytes) and got:
            return got
        self._ended = True  # b"": the other end closed the stream
        return None

    def write(self, data: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            with self._lock:
                if self._ended:
                    raise ConsoleClosed(f"the console of VM {self._name!r} ended")
                try:
                    sent = self._stream.send(bytes(view))
                except libvirt.libvirtError as exc:
                    self._ended = True
                    raise ConsoleClosed(f"the console of VM {self._name!r} ended: "
                                        f"{exc.get_error_message()}") from exc
            if sent == _WOULD_BLOCK:
                if time.monotonic() >= deadline:
                    raise Timeout(f"the console of VM {self._name!r} took no input "
                                  f"for {timeout:g} s")
                time.sleep(POLL_INTERVAL)
                continue
            view = view[sent:]

    def close(self) -> None:
        """Detach, also after the other end ended: until the stream is finished or aborted,
        libvirt keeps its side open, and with it the pty's lock file
        (``/var/lock/LCK.._pts_N``), which refuses the next console on a reused pty number
        as long as this process lives."""
        with self._lock:
            if self._released:
                return
            self._ended = self._released = True
            try:
                self._stream.finish()
            except libvirt.libvirtError:
                with contextlib.suppress(libvirt.libvirtError):  # gone already: nothing to detach
                    self._stream.abort()


def open_console(site: Site, vm_id: str) -> DomainConsole:
    """Attach to the first serial console of a running domain. Another session already
    attached (a ``virsh console``) is not taken over: that is an InvalidState."""
    with site.domain(vm_id, "open the console") as dom:
        name = dom.name()
        with site.link.call("open the console") as conn:
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            dom.openConsole(None, stream, 0)
        except libvirt.libvirtError as exc:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            error = translate(exc, f"console of VM {name!r}")
            if "Active console session" in (exc.get_error_message() or ""):
                error = InvalidState(f"the console of VM {name!r} is in use by another "
                                     "session (a virsh console?): close that one first")
            raise error from exc
    return DomainConsole(stream, name)
