"""Re-login once: reads are repeated after an expiry, writes are not (unless marked idempotent)."""

from __future__ import annotations

import threading

import pytest

from anyvirt.errors import AnyvirtError, AuthenticationFailed, ConnectionFailed
from anyvirt.kit.session import Relogin


class Expired(Exception):
    pass


class Platform:
    """A server whose session expires when told to; counts logins and requests."""

    def __init__(self) -> None:
        self.logins = 0
        self.valid = False
        self.requests = 0
        self.refuse_login = False
        self.dead_logins = False  # a login whose session is gone at once

    def login(self) -> None:
        if self.refuse_login:
            raise AuthenticationFailed("refused")
        self.logins += 1
        self.valid = not self.dead_logins

    def request(self) -> str:
        self.requests += 1
        if not self.valid:
            raise Expired("session gone")
        return "answer"


def relogin(platform: Platform) -> Relogin:
    guard = Relogin(platform.login, expired=lambda e: isinstance(e, Expired),
                    translate=lambda e, what: AnyvirtError(f"{what}: {e}"))
    guard.login()
    return guard


def test_an_expired_read_logs_in_once_and_is_repeated() -> None:
    platform = Platform()
    guard = relogin(platform)
    platform.valid = False
    assert guard.call(platform.request, "listing", idempotent=True) == "answer"
    assert (platform.logins, platform.requests, guard.generation) == (2, 2, 2)


def test_an_expired_write_logs_in_but_is_not_replayed() -> None:
    platform = Platform()
    guard = relogin(platform)
    platform.valid = False
    with pytest.raises(ConnectionFailed, match="not repeated") as caught:
        guard.call(platform.request, "creating web1", idempotent=False)
    assert isinstance(caught.value.__cause__, Expired)
    assert (platform.logins, platform.requests) == (2, 1)
    assert guard.call(platform.request, "creating web1", idempotent=False) == "answer"


def test_only_one_relogin_then_the_error() -> None:
    platform = Platform()
    guard = relogin(platform)
    platform.valid, platform.dead_logins = False, True
    with pytest.raises(AnyvirtError, match="listing: session gone"):
        guard.call(platform.request, "listing", idempotent=True)
    assert (platform.requests, platform.logins) == (2, 2)


def test_a_refused_relogin_is_authentication_failed() -> None:
    platform = Platform()
    guard = relogin(platform)
    platform.valid, platform.refuse_login = False, True
    with pytest.raises(AuthenticationFailed):
        guard.call(platform.request, "listing", idempotent=True)


def test_other_errors_are_translated() -> None:
    guard = relogin(Platform())

    def broken() -> None:
        raise OSError("connection reset")

    with pytest.raises(AnyvirtError, match="reading: connection reset") as caught:
        guard.call(broken, "reading", idempotent=True)
    assert isinstance(caught.value.__cause__, OSError)


def test_threads_that_see_one_expiry_share_one_relogin() -> None:
    platform = Platform()
    guard = relogin(platform)
    platform.valid = False
    barrier = threading.Barrier(8)
    first = threading.local()

    def request() -> str:
        if not getattr(first, "done", False):
            first.done = True
            try:
                return platform.request()
            finally:
                barrier.wait(timeout=5)  # all eight failed before anyone logs in again
        return platform.request()

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(
        guard.call(request, "listing", idempotent=True))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["answer"] * 8
    assert platform.logins == 2  # the first login and one re-login, not eight
