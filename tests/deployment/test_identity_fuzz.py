"""Any text a user can put into an Identity is refused or reaches the guest as that text."""

from __future__ import annotations

import json

import yaml
from deployment_support import make_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyvirt.deployment import Identity, User
from anyvirt.deployment.documents import user_data
from anyvirt.deployment.sshkeys import parse_ssh_key
from anyvirt.errors import InvalidSpec

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def guest_sees(text: str) -> object:
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


@FUZZ
@given(TEXT)
def test_any_user_data_string_is_carried_as_data(value: str) -> None:
    text = f"#cloud-config\nwrite_files:\n- path: /x\n  content: {json.dumps(value)}\n"
    try:
        spec = Identity(user_data=text)
    except InvalidSpec as error:
        # json.dumps writes U+10000 and up as two \\u escapes, which YAML reads as two lone
        # surrogates: refused, never sent as text that cannot be encoded
        assert error.rule == "surrogates" and any(ord(ch) > 0xFFFF for ch in value)
        return
    seen = guest_sees(user_data(spec.resolve("web1", "iid-1")))
    assert isinstance(seen, dict)
    assert seen["write_files"] == [{"path": "/x", "content": value}]
    assert seen["hostname"] == "web1"


@FUZZ
@given(TEXT)
def test_any_key_comment_is_refused_or_carried_as_data(comment: str) -> None:
    key = make_key(comment="c") .rsplit(" ", 1)[0] + " " + comment
    try:
        parsed = parse_ssh_key(key)
    except InvalidSpec:
        return
    spec = Identity(users=[User("ops", ssh_keys=[parsed])])
    seen = guest_sees(user_data(spec.resolve("web1", "iid-1")))
    assert isinstance(seen, dict)
    assert seen["users"][0]["ssh_authorized_keys"] == [parsed]
    assert list(seen) == ["hostname", "users"]


@FUZZ
@given(TEXT)
def test_any_hostname_is_refused_or_is_the_whole_host_name(name: str) -> None:
    try:
        resolved = Identity(hostname=name).resolve("web1", "iid-1")
    except InvalidSpec:
        return
    seen = guest_sees(user_data(resolved))
    assert isinstance(seen, dict)
    assert list(seen) in (["hostname"], ["hostname", "fqdn"])
    assert seen.get("fqdn", seen["hostname"]) == name
