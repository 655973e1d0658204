"""What a driver hands the core for a VM's serial console, and the waiting every channel shares.

A driver's :meth:`~anyvirt.driver.Driver.open_console` returns a :class:`ConsoleChannel`:
bytes in, bytes out, nothing interpreted. The user's handle (:class:`anyvirt.console.Console`)
adds the waiting for a pattern on top, once for every backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from anyvirt.errors import ConsoleClosed

#: how often a channel without a blocking read with a timeout looks for new output
POLL_INTERVAL = 0.02


class ConsoleChannel(Protocol):
    """A VM's serial line, attached."""

    def read(self, timeout: float) -> bytes:
        """What the guest wrote since the last read, waiting up to ``timeout`` seconds for
        the first byte; ``b""`` when nothing came. Raises ConsoleClosed once it ended."""

    def write(self, data: bytes) -> None:
        """Send ``data`` to the guest as typed input."""

    def close(self) -> None:
        """Detach; the VM keeps running. Closing twice is harmless."""


def poll_read(try_read: Callable[[], bytes | None], timeout: float, what: str) -> bytes:
    """For channels that can only ask "anything now?": ``try_read`` returns bytes, ``b""``
    when nothing is waiting, or None when the console ended; asked until ``timeout``."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        got = try_read()
        if got is None:
            raise ConsoleClosed(f"the console of {what} ended")
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(POLL_INTERVAL)
