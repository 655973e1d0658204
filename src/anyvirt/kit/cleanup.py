"""Cleanup after a failure: the original error is the one raised, whatever the cleanup does.

A create that fails is undone (the half-made VM, its directory, an uploaded
image removed). When the undoing fails too (the same broken connection,
usually), the caller must still see why the create failed, not "listing VMs:
SSLEOFError". So each cleanup step runs under :func:`noting`: its failure is
logged and attached to the original error as a note (``add_note``, shown
under the traceback), and the next step still runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger("anyvirt")


@contextlib.contextmanager
def noting(original: BaseException, step: str) -> Iterator[None]:
    """Run one cleanup ``step`` after ``original``; a failure becomes a note on ``original``."""
    try:
        yield
    except Exception as exc:
        note = f"cleanup also failed while {step}: {type(exc).__name__}: {exc}"
        original.add_note(note)
        log.warning("%s (after: %s)", note, type(original).__name__)


__all__ = ["noting"]
