"""A running VM's serial console, as a user holds it: read what the guest writes, type to it.

``vm.console()`` attaches (``Capability.CONSOLE``) and returns a :class:`Console`; use it as a
context manager so it is always detached. The guest's bytes are passed through untouched:
nothing the guest writes is interpreted here.
"""

from __future__ import annotations

import re
import time
from types import TracebackType

from anyvirt.errors import ConsoleClosed, InvalidSpec, Timeout
from anyvirt.kit.console import ConsoleChannel

#: what :meth:`Console.expect` keeps of the output while it waits (a runaway guest must not
#: grow this process without bound)
EXPECT_WINDOW = 1 << 20


class Console:
    """A running VM's serial console, attached. ``read``/``write`` pass bytes through;
    ``expect`` waits for a pattern, the way ``expect`` and ``virsh console`` users do."""

    def __init__(self, channel: ConsoleChannel, vm_name: str) -> None:
        self._channel = channel
        self.vm_name = vm_name
        self.closed = False
        self._pending = b""  # read past an expect()'s match: the next read returns it first

    def __repr__(self) -> str:
        return f"<Console of VM {self.vm_name!r}{' (closed)' if self.closed else ''}>"

    def read(self, timeout: float = 1.0) -> bytes:
        """What the guest wrote since the last read, waiting up to ``timeout`` seconds for
        something to come; ``b""`` if nothing did. ConsoleClosed once the console ended."""
        self._check_open()
        if not isinstance(timeout, (int, float)) or timeout < 0:
            raise InvalidSpec(f"timeout must be a number of seconds >= 0, not {timeout!r}")
        if self._pending:
            got, self._pending = self._pending, b""
            return got
        return self._channel.read(float(timeout))

    def write(self, data: bytes | str) -> None:
        """Type ``data`` to the guest (a ``str`` is sent as UTF-8). Line ends are the
        guest's business: a shell on a serial line wants ``"\\r"`` or ``"\\n"`` as it was set."""
        self._check_open()
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidSpec(f"console input must be bytes or str, not {type(data).__name__}")
        if data:
            self._channel.write(bytes(data))

    def expect(self, pattern: bytes | str | re.Pattern[bytes], timeout: float = 30.0) -> bytes:
        """Read until ``pattern`` (bytes, str, or a compiled bytes regex) appears; all that
        was read, up to and including the match. ``Timeout`` (with the tail that was seen)
        if it does not appear in time."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        wanted = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        seen = b""
        while True:
            found = wanted.search(seen)
            if found:
                self._pending = seen[found.end():] + self._pending
                return seen[:found.end()]
            left = deadline - time.monotonic()
            if left <= 0:
                tail = seen[-200:].decode(errors="replace")
                raise Timeout(f"{wanted.pattern!r} did not appear on the console of "
                              f"{self.vm_name!r} within {timeout:g} s; last output: {tail!r}")
            seen = (seen + self.read(min(left, 0.5)))[-EXPECT_WINDOW:]

    def close(self) -> None:
        """Detach. The VM keeps running; closing twice is harmless."""
        if not self.closed:
            self.closed = True
            self._channel.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ConsoleClosed(f"the console of {self.vm_name!r} was closed")
