"""Error tables: first matching rule wins, original chained, secrets never in the message."""

from __future__ import annotations

import pytest

from anyvirt.errors import (
    AnyvirtError,
    ConnectionFailed,
    InvalidState,
    NotFound,
    NotSupported,
)
from anyvirt.kit.errors import ErrorTable, Rule, scrub


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


TABLE = ErrorTable(
    [
        Rule(NotFound, codes=(404,)),
        Rule(InvalidState, codes=(500,), pattern=r"VM is (running|locked)",
             template="{what}: the VM is busy ({message})"),
        Rule(NotSupported, codes=(501,), build=lambda msg, what: NotSupported("pve", what, msg)),
        Rule(ConnectionFailed, types=(OSError,), template="{what}: {type}: {message}"),
    ],
    default=Rule(AnyvirtError, template="{what}: HTTP {code}: {message}"),
    code=lambda e: getattr(e, "status", None),
    secrets=lambda: ["hunter22"],
)


def test_rules_in_order_with_codes_patterns_and_types() -> None:
    assert isinstance(TABLE.translate(ApiError(404, "no such VM"), "getting web1"), NotFound)
    busy = TABLE.translate(ApiError(500, "can't lock: VM is locked (backup)"), "starting web1")
    assert isinstance(busy, InvalidState)
    assert str(busy) == "starting web1: the VM is busy (can't lock: VM is locked (backup))"
    other = TABLE.translate(ApiError(500, "disk on fire"), "starting web1")
    assert type(other) is AnyvirtError and str(other) == "starting web1: HTTP 500: disk on fire"
    reset = TABLE.translate(ConnectionResetError("reset by peer"), "listing")
    assert isinstance(reset, ConnectionFailed) and "ConnectionResetError: reset by peer" in str(reset)


def test_built_errors_and_chaining() -> None:
    original = ApiError(501, "no such API")
    error = TABLE.translate(original, "snapshot")
    assert isinstance(error, NotSupported) and error.backend == "pve"
    assert error.__cause__ is original
    already = NotFound("x")
    assert TABLE.translate(already, "anything") is already


@pytest.mark.parametrize("text", [
    "login failed for password=hunter22&user=root",
    "GET https://root:hunter22@pve1:8006/api2/json failed",
    "bad header Cookie: PVEAuthCookie=PVE:root@pam:ABC",
    "ticket: PVE:root@pam:1234::sig",
    "it was hunter22 all along",
])
def test_secrets_never_reach_the_message(text: str) -> None:
    message = str(TABLE.translate(ApiError(418, text), "logging in"))
    assert "hunter22" not in message
    assert "ABC" not in message and "1234::sig" not in message
    assert "***" in message


def test_scrub_leaves_ordinary_text_alone() -> None:
    assert scrub("VM web1 has 2 CPUs (token bucket full)") == "VM web1 has 2 CPUs (token bucket full)"
