"""The pure logic under the hostile suite: the field rules, re-sending reads on a lost
connection, OutcomeUnknown for writes, cleanup notes, and traceback stripping."""

from __future__ import annotations

import pytest

from anyvirt import validation
from anyvirt.errors import AnyvirtError, ConnectionFailed, InvalidSpec, OutcomeUnknown
from anyvirt.kit.cleanup import noting
from anyvirt.kit.session import Relogin


@pytest.mark.parametrize(("rule", "value", "broken"), [
    (validation.NAME, None, "type"),
    (validation.NAME, b"x", "type"),
    (validation.NAME, "", "empty"),
    (validation.NAME, " x", "padding"),
    (validation.NAME, "..", "path"),
    (validation.NAME, "a\ud800", "surrogates"),
    (validation.NAME, "a\uffff", "noncharacters"),
    (validation.NAME, "a\ufdd0", "noncharacters"),
    (validation.NAME, "a\x85b", "control characters"),
    (validation.NAME, "a\nb", "control characters"),
    (validation.NAME, "x" * 81, "length"),
    (validation.NAME, "\u00e9" * 80 + "", None),  # 80 characters, 160 bytes: taken
    (validation.NAME, "\U0001f600" * 61, "length"),  # 61 characters, 244 bytes
    (validation.DESCRIPTION, None, "type"),
    (validation.DESCRIPTION, "", None),
    (validation.DESCRIPTION, "a\tb\nc", None),
    (validation.DESCRIPTION, "a\x00", "control characters"),
    (validation.DESCRIPTION, "a\x7f\x85\x9f", None),  # XML 1.0 carries DEL and C1
    (validation.DESCRIPTION, "x" * 8193, "length"),
    (validation.DESCRIPTION, "\u00e9" * 4097, "length"),  # 4097 characters, 8194 bytes
    (validation.REFERENCE, " padded is fine ", None),
    (validation.URI, "memory://x\ty", "control characters"),
    (validation.URI, "memory://x ", "padding"),
])
def test_each_rule_names_what_it_refused(rule: validation.TextRule, value: object,
                                        broken: str | None) -> None:
    if broken is None:
        assert rule.check(value) == value
        return
    with pytest.raises(InvalidSpec) as caught:
        rule.check(value)
    assert (caught.value.field, caught.value.rule) == (rule.field, broken)


def test_descriptions_are_stored_with_lf_and_names_are_never_normalised() -> None:
    assert validation.DESCRIPTION.check("a\r\nb\rc") == "a\nb\nc"
    nfd = "e\u0301"
    assert validation.NAME.check(nfd) == nfd and validation.NAME.check("\u00e9") == "\u00e9"


def test_a_secret_field_is_never_quoted() -> None:
    with pytest.raises(InvalidSpec) as caught:
        validation.URI.check("vsphere://u:secret\n@h")
    assert "secret" not in str(caught.value)


def test_the_rules_table_lists_every_rule() -> None:
    table = validation.rules_markdown()
    for rule in validation.RULES:
        assert f"| {rule.field} |" in table


class _Lost(ConnectionResetError):
    pass


def _relogin(translate_to: type[AnyvirtError] = ConnectionFailed) -> Relogin:
    return Relogin(lambda: None, expired=lambda exc: False,
                   translate=lambda exc, what: translate_to(f"{what}: {exc}"),
                   lost=lambda exc: isinstance(exc, _Lost))


def test_a_read_on_a_lost_connection_is_sent_once_more() -> None:
    calls: list[int] = []

    def read() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise _Lost("the server closed the pooled connection")
        return "answer"

    assert _relogin().call(read, "reading", idempotent=True) == "answer"
    assert len(calls) == 2


def test_a_read_lost_twice_fails_translated() -> None:
    def read() -> str:
        raise _Lost("gone")

    with pytest.raises(ConnectionFailed, match="reading: gone"):
        _relogin().call(read, "reading", idempotent=True)


def test_a_write_on_a_lost_connection_is_outcome_unknown_and_not_sent_again() -> None:
    calls: list[int] = []

    def write() -> None:
        calls.append(1)
        raise _Lost("reset")

    with pytest.raises(OutcomeUnknown, match="may have been carried out") as caught:
        _relogin().call(write, "powering on", idempotent=False)
    assert calls == [1]
    assert isinstance(caught.value.__cause__, _Lost)


def test_outcome_unknown_is_told_which_vm_once() -> None:
    error = OutcomeUnknown("starting: reset", task_id="task-1")
    error.concerning(vm_id="42", vm_name="web1")
    error.concerning(vm_id="43", vm_name="other")  # the first answer stands
    assert (error.vm_id, error.vm_name, error.task_id) == ("42", "web1", "task-1")
    assert str(error).count("check VM 'web1' (id 42)") == 1
    assert isinstance(error, ConnectionFailed)


def test_a_failed_cleanup_is_a_note_and_the_next_step_still_runs() -> None:
    original = ValueError("the create failed")
    ran: list[str] = []
    with noting(original, "removing the half-made VM"):
        raise ConnectionFailed("listing VMs: SSLEOFError")
    with noting(original, "removing its directory"):
        ran.append("directory")
    assert ran == ["directory"]
    assert original.__notes__ == [
        "cleanup also failed while removing the half-made VM: ConnectionFailed: listing VMs: SSLEOFError"]


def test_without_frames_drops_every_traceback_of_the_chain() -> None:
    from anyvirt.kit.errors import without_frames

    def sdk(password: str) -> None:
        try:
            raise OSError("inner")
        except OSError as inner:
            raise RuntimeError("outer") from inner

    try:
        sdk("hunter2")
    except RuntimeError as exc:
        caught = exc
    assert caught.__traceback__ is not None and caught.__cause__ is not None
    without_frames(caught)
    assert caught.__traceback__ is None and caught.__cause__.__traceback__ is None
    assert str(caught) == "outer"
