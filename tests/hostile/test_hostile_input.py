"""Hostile strings and numbers at the edge: each case of the adversarial pass, on every backend.

Every case here once escaped as an untyped error, or was accepted by one
backend and refused by another, or made a platform write outside its own
place. Now each is ``InvalidSpec`` naming the field and the rule, the same on
memory://, a real libvirtd and vcsim, before anything changes on the host.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hostile_support import Target

import anyvirt
from anyvirt.errors import AnyvirtError, ConnectionFailed, InvalidSpec
from anyvirt.model import DiskSpec, VMSpec
from anyvirt.target import Secret
from anyvirt.testing.plugin import unique_name
from anyvirt.validation import NAME_MAX_BYTES


def _refused(target: Target, make: object, field: str, rule: str) -> InvalidSpec:
    """``make()`` raises InvalidSpec for ``field``/``rule`` and the host is unchanged."""
    assert callable(make)
    with pytest.raises(InvalidSpec) as caught, target.unchanged_on_error():
        make()
    assert (caught.value.field, caught.value.rule) == (field, rule), str(caught.value)
    return caught.value


# ---------------------------------------------------------------- typed errors, same everywhere


@pytest.mark.parametrize("text", ["nul\x00inside", "bell\x07", "esc\x1b[31m", "vt\x0b", "cr-only\x1f"])
def test_control_characters_in_a_description_are_refused_everywhere(target: Target, text: str) -> None:
    host = target.host
    _refused(target, lambda: host.vms.create(VMSpec(name=unique_name("hostile"), description=text)),
             "description", "control characters")


@pytest.mark.parametrize("value", [5, b"bytes", None, ["x"]])
def test_a_description_that_is_not_a_string_is_refused_everywhere(target: Target, value: object) -> None:
    host = target.host
    _refused(target, lambda: host.vms.create(VMSpec(name=unique_name("hostile"), description=value)),
             "description", "type")


def test_a_lone_surrogate_is_refused_in_names_descriptions_and_snapshot_names(target: Target) -> None:
    host = target.host
    _refused(target, lambda: host.vms.create(VMSpec(name="bad\ud800name")), "VM name", "surrogates")
    _refused(target, lambda: host.vms.create(VMSpec(name=unique_name("hostile"), description="x\udfff")),
             "description", "surrogates")
    name = unique_name("hostile")
    vm = host.vms.create(VMSpec(name=name, memory_mib=64))
    try:
        _refused(target, lambda: vm.snapshots.create("snap\ud83d"), "snapshot name", "surrogates")
        _refused(target, lambda: vm.snapshots.create("ok", description="\ud83d"),
                 "description", "surrogates")
        _refused(target, lambda: vm.snapshots.create("ok", description=7),  # type: ignore[call-overload]
                 "description", "type")
    finally:
        target.remove(name)


@pytest.mark.parametrize("ref", ["a\x00b", "x\ud800", ""])
def test_a_lookup_no_name_could_match_is_invalid_spec_everywhere(target: Target, ref: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        target.host.vms.get(ref)
    assert caught.value.field == "VM id or name"


@pytest.mark.parametrize("name", ["del\x7f", "c1\x85x", "tab\there", "csi\x9bx"])
def test_control_characters_in_a_name_are_refused_everywhere(target: Target, name: str) -> None:
    host = target.host
    _refused(target, lambda: host.vms.create(VMSpec(name=name)), "VM name", "control characters")


@pytest.mark.parametrize("text", [
    "evil\u202edrow\x7f and \x85 and \x9f",  # DEL and C1: XML 1.0 carries them, so they stay
    # nothing reads a file, runs a command or expands an entity because a description names it
    "@/etc/passwd file:///etc/shadow $(cat /etc/passwd) `id` ${HOME} <!ENTITY x SYSTEM 'f'>",
])
def test_a_description_comes_back_exactly_everywhere(target: Target, text: str) -> None:
    name = unique_name("hostile")
    try:
        vm = target.host.vms.create(VMSpec(name=name, memory_mib=64, description=text))
        assert vm.info().description == text
    finally:
        target.remove(name)


def test_crlf_and_cr_in_a_description_come_back_as_lf_everywhere(target: Target) -> None:
    name = unique_name("hostile")
    spec = VMSpec(name=name, memory_mib=64, description="one\r\ntwo\rthree\n\tfour")
    assert spec.description == "one\ntwo\nthree\n\tfour"  # what is accepted is what is stored
    try:
        vm = target.host.vms.create(spec)
        assert vm.info().description == spec.description
    finally:
        target.remove(name)


# ---------------------------------------------------------------- names a platform treats as paths


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_names_are_refused_everywhere_and_leave_no_directory(target: Target, name: str) -> None:
    host = target.host
    _refused(target, lambda: host.vms.create(VMSpec(name=name, memory_mib=64,
                                                    disks=[DiskSpec(size_gib=0.01)])),
             "VM name", "path")


def test_names_are_limited_in_utf8_bytes_and_the_longest_allowed_round_trips(target: Target) -> None:
    emoji = "\U0001f600"
    host = target.host
    _refused(target, lambda: host.vms.create(VMSpec(name=emoji * 80, memory_mib=64)),
             "VM name", "length")
    name = emoji * (NAME_MAX_BYTES // 4)  # 60 emoji, 240 bytes: the longest that is taken
    try:
        vm = host.vms.create(VMSpec(name=name, memory_mib=64, disks=[DiskSpec(size_gib=0.01)]))
        assert vm.name == name
        assert host.vms.get(name).info().name == name
    finally:
        target.remove(name)


def test_a_datastore_path_that_leaves_its_datastore_is_refused(vsphere_target: Target) -> None:
    host = vsphere_target.host
    error = _refused(vsphere_target, lambda: host.vms.create(VMSpec(
        name=unique_name("hostile"), memory_mib=64,
        disks=[DiskSpec(image="[LocalDS_0] ../../outside-ds/x.vmdk")])),
        "disk image", "inside the datastore")
    assert "outside-ds" in str(error)
    for path in ("[LocalDS_0] /etc/x.vmdk", "[LocalDS_0] a/./x.vmdk", "[] x.vmdk", "[LocalDS_0]",
                 "[Local]DS] x.vmdk", "[NoSuchDS] x/x.vmdk"):
        with pytest.raises(InvalidSpec), vsphere_target.unchanged_on_error():
            host.vms.create(VMSpec(name=unique_name("hostile"), memory_mib=64, disks=[DiskSpec(image=path)]))


def test_a_vsphere_name_is_measured_as_vsphere_stores_it(vsphere_target: Target) -> None:
    host = vsphere_target.host
    # 60 '%' are 60 characters here, but 180 once vSphere has escaped them
    _refused(vsphere_target, lambda: host.vms.create(VMSpec(name="%" * 60, memory_mib=64)),
             "VM name", "length")


# ---------------------------------------------------------------- options and numbers


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e9"])
def test_a_timeout_must_be_finite_and_positive_in_the_uri_and_as_keyword(value: str) -> None:
    with pytest.raises(InvalidSpec, match="timeout"):
        anyvirt.connect(f"memory://t?timeout={value}")
    with pytest.raises(InvalidSpec, match="timeout"):
        anyvirt.connect("memory://t", timeout=float(value))


def test_memory_nodes_are_bounded() -> None:
    with pytest.raises(InvalidSpec, match="nodes"):
        anyvirt.connect("memory://huge?nodes=50000000")


def test_an_embed_root_that_cannot_be_prepared_is_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match="root"):
        anyvirt.connect("libvirt+qemu:///embed?root=/proc/1")


def test_the_libvirt_test_driver_never_quotes_the_file_it_was_given(tmp_path: Path) -> None:
    secret_line = "root:x:0:0:SECRET-FIRST-LINE:/root:/bin/bash"
    file = tmp_path / "passwd"
    file.write_text(secret_line + "\nsecond line\n")
    with pytest.raises(ConnectionFailed) as caught:
        anyvirt.connect(f"libvirt+test://{file}")
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for item in chain:
        assert "SECRET-FIRST-LINE" not in str(item)


# ---------------------------------------------------------------- option injection through file names


def test_an_image_named_like_an_option_is_a_file_on_every_backend(
        target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``qemu-img`` is given ``--`` and an absolute path: ``--help`` is read as the file it is."""
    monkeypatch.chdir(tmp_path)
    payload = b"anyvirt says hello from a file named --help"
    image = tmp_path / "--help"
    with image.open("wb") as f:
        f.write(payload)
        f.truncate(1024 * 1024)
    name = unique_name("hostile")
    try:
        vm = target.host.vms.create(VMSpec(name=name, memory_mib=64, disks=[DiskSpec(image="--help")]))
        disks = vm.info().disks
        assert len(disks) == 1
        assert disks[0].size_bytes == 1024 * 1024
    finally:
        target.remove(name)
    assert image.read_bytes()[: len(payload)] == payload  # the source is never written


def test_an_option_like_image_that_is_no_file_is_refused_before_anything(target: Target,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    host = target.host
    with pytest.raises(InvalidSpec, match="readable file"), target.unchanged_on_error():
        host.vms.create(VMSpec(name=unique_name("hostile"), memory_mib=64, disks=[DiskSpec(image="-f")]))


# ---------------------------------------------------------------- secrets in URIs


@pytest.mark.parametrize("uri", [
    "vsphere://admin:2024/Spring!PW@vc.example.com",
    "vsphere://admin:12#34PW@vc.example.com",
    "vsphere://admin:pa?ssPW@vc.example.com",
    "vsphere://admin:12?ssPW=x@vc.example.com",
])
def test_a_password_with_reserved_characters_is_refused_with_a_hint(
        uri: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    with pytest.raises(InvalidSpec) as caught:
        anyvirt.connect(uri)
    assert "percent-encode" in str(caught.value)
    password = uri.split("admin:", 1)[1].rsplit("@", 1)[0]
    for shown in (str(caught.value), caplog.text):
        assert password not in shown
        assert "PW" not in shown


def test_a_percent_encoded_password_is_parsed_as_meant() -> None:
    from anyvirt.connect import build_target

    parsed = build_target("vsphere://admin:2024%2FSpring!%23%3F%40PW@vc.example.com")
    assert parsed.host == "vc.example.com"
    assert parsed.credentials.password == Secret("2024/Spring!#?@PW")
    assert "PW" not in parsed.safe_uri and "PW" not in repr(parsed)


def test_an_empty_uri_is_refused_not_taken_for_the_local_default() -> None:
    with pytest.raises(InvalidSpec, match="empty"):
        anyvirt.connect("")


def test_only_anyvirt_errors_escape_on_odd_uris() -> None:
    for uri in ["://", "x://", "vsphere://[::1", "vsphere://h:99999", "memory://a b",
                "vsphere://h:-1", "a+://h", "memory://\x00", "memory://x?timeout=\ud800"]:
        with contextlib.suppress(AnyvirtError):
            anyvirt.connect(uri).close()
