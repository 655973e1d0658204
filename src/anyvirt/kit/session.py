"""Calls over a login session that can expire: log in again once, repeat only what is safe.

Platform sessions time out (vCenter after 30 idle minutes, a Proxmox ticket
after two hours) and a long-lived connection must survive that by itself.
What must never happen is a write sent twice: a "create VM" whose answer was
"session expired" may have been done, or not. So after an expiry:

- the session logs in again, once (one thread does it; others that saw the
  same expiry reuse the new login);
- an idempotent call (a read, or a write the caller marks as safe to
  repeat) is sent again, once; if that one also fails, it fails;
- any other call is not repeated: ``ConnectionFailed`` says it may or may
  not have been done and the caller decides.

The same holds for a connection **lost** under a call (a pooled connection
the server closed meanwhile, a restart, a cut): an idempotent call is sent
once more (on a fresh connection), any other raises
:class:`~anyvirt.errors.OutcomeUnknown`, since the server may have carried
it out before the answer was lost.

Every other exception goes through the platform's translation (an
:class:`~anyvirt.kit.errors.ErrorTable` usually) and is chained.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from anyvirt.errors import AnyvirtError, ConnectionFailed, OutcomeUnknown

T = TypeVar("T")


class Relogin:
    """Re-login-once for one platform session.

    ``login`` logs in (raises an AnyvirtError when refused); ``expired`` says
    whether an exception means the session is gone; ``lost`` whether it means the
    connection dropped after the request may have been sent; ``translate`` turns
    any other exception into an AnyvirtError for ``what``. ``generation`` grows on
    every login, so caches bound to a session (property views, tickets) can
    tell they went stale.
    """

    def __init__(
        self,
        login: Callable[[], None],
        *,
        expired: Callable[[BaseException], bool],
        translate: Callable[[BaseException, str], AnyvirtError],
        check_open: Callable[[str], None] | None = None,
        lost: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self._login = login
        self._expired = expired
        self._lost = lost
        self._translate = translate
        self._check_open = check_open
        self._lock = threading.Lock()
        self.generation = 0

    def login(self) -> None:
        """Log in (the first time, or again); bumps ``generation``."""
        with self._lock:
            self._login()
            self.generation += 1

    def call(self, fn: Callable[[], T], what: str, *, idempotent: bool) -> T:
        """Run ``fn``; on session expiry log in again and repeat it only if ``idempotent``."""
        if self._check_open is not None:
            self._check_open(what)
        seen = self.generation
        if idempotent and self._lost is not None:
            fn = self._once_more_if_lost(fn)
        try:
            return fn()
        except AnyvirtError:
            raise
        except Exception as exc:
            if not idempotent and self._lost is not None and self._lost(exc):
                error = self._translate(exc, what)
                raise OutcomeUnknown(
                    f"{error}; the request had been sent, so it may have been carried out"
                ) from exc
            if not self._expired(exc):
                raise self._translate(exc, what) from exc
            self._relogin(seen)
            if not idempotent:
                raise ConnectionFailed(
                    f"{what}: the session had expired; logged in again, but the request "
                    "changes state and was not repeated (it may or may not have been done): "
                    "retry it if it is still wanted"
                ) from exc
        try:
            return fn()
        except AnyvirtError:
            raise
        except Exception as exc:
            raise self._translate(exc, what) from exc

    def _once_more_if_lost(self, fn: Callable[[], T]) -> Callable[[], T]:
        lost = self._lost
        assert lost is not None

        def twice() -> T:
            try:
                return fn()
            except Exception as exc:
                if not lost(exc):
                    raise
            return fn()  # outside the except: a second failure is not chained to the first

        return twice

    def _relogin(self, seen: int) -> None:
        with self._lock:
            if self._check_open is not None:
                self._check_open("logging in again")
            if self.generation != seen:
                return  # another thread logged in again meanwhile: use its session
            try:
                self._login()
            except AnyvirtError:
                raise  # refused credentials etc.; the expiry stays visible as __context__
            except Exception as exc:
                raise self._translate(exc, "logging in again after the session expired") from exc
            self.generation += 1


__all__ = ["Relogin"]
