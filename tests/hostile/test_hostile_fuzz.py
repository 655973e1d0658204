"""A bounded fuzz of the API's edge: names, descriptions, snapshot names, URIs, connect
options and backup archives, on memory://, a real libvirtd, vcsim and fakepve.

Properties, for every generated input:

* only ``AnyvirtError`` escapes;
* when an error is raised, nothing changed on the host (VMs, volumes, datastore files);
* an accepted string comes back exactly as accepted (``VMSpec`` holds the accepted form);
* a password appears in no repr, str, message or log record;
* a description made of another VM's platform output (its id, name, state lines, XML
  closing tags, PVE JSON and config lines) never changes which VM is read, listed or deleted.

The default run is bounded to about a minute in all; ``ANYVIRT_FUZZ_SCALE=10`` runs ten
times the examples. Hypothesis keeps no example database here (``database=None``): the
run is the same on every machine, and a failure prints the example to replay.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hostile_support import Target
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import anyvirt
from anyvirt import migration
from anyvirt.connect import build_target
from anyvirt.errors import AlreadyExists, AnyvirtError, InvalidSpec
from anyvirt.model import DiskSpec, VMSpec
from anyvirt.testing.plugin import unique_name

SCALE = float(os.environ.get("ANYVIRT_FUZZ_SCALE", "1"))
#: examples per backend: memory:// is in-process, libvirt defines in milliseconds, vcsim is slower
EXAMPLES = {"memory": 500, "libvirt": 250, "vsphere": 120, "proxmox": 120}


def _settings(examples: int) -> settings:
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                    derandomize=True, suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------- strategies

HOSTILE_CHARS = [
    "\x00", "\ud800", "\udfff", "\r", "\n", "\r\n", "\t", "\x07", "\x1b", "\x7f", "\x85", "\u2028",
    "\u2029", "\ufeff", "\ufffe", "\uffff", "\ufdd0", "\u202e", "\u200d", "\u00a0", "\u3000", "/",
    "\\", "%", "%2f", "%00", "'", '"', "<", ">", "&", "&amp;", "]]>", "<!--", "$", "`", "$(id)", "*",
    "?", "#", "[", "]", "{", "}", ";", "|", " ", "..", ".", "~", "-", "--", "=", "@", ":", ",",
    "\u00e9", "e\u0301", "\U0001f600", "\U0001f469\u200d\U0001f4bb", "\u0130", "\u00df", "\u03a3",
]
SURROGATES = [chr(code) for code in range(0xD800, 0xE000, 97)]
HOSTILE_STRINGS = [
    ".", "..", "/", "-", "--help", "-rf", "~", "~root", "a/../b", "../../etc", "CON", "NUL", "aux",
    "x" * 80, "x" * 81, "\U0001f600" * 60, "\U0001f600" * 61, "%" * 27, "%" * 26, "a%2fb", "a/b",
    "<name>x</name>", "]]><x/>", "&lt;", "' or '1'='1", "$(reboot)", "`id`", "${IFS}", "a\\b",
    "\u202egnp.exe", "e\u0301", "\u00e9", " lead", "trail ", "in side", "NaN", "None", "0",
    # platform output a parser might take for structure (issue 17: a description became settings)
    'x"\nUUID=', "\nVMState=\"running\"\n", "</description><uuid>", '"vmid": 100', "\nname: x\n",
    "[snap]\nparent: x", "\\n", "\\x1b]0;t\\x07",
]


def hostile_text(max_size: int) -> st.SearchStrategy[str]:
    pieces = st.one_of(st.characters(), st.sampled_from(HOSTILE_CHARS), st.sampled_from(SURROGATES))
    joined = st.lists(pieces, max_size=max_size).map("".join)
    return st.one_of(joined, st.sampled_from(HOSTILE_STRINGS), st.text(max_size=max_size))


#: text the rules take, so that round trips really happen on the platforms
PLAUSIBLE = st.lists(st.one_of(st.characters(exclude_categories=("Cc", "Cs")),
                               st.sampled_from(["/", "%", "\\", "'", '"', "<", "&", "]]>", "$(id)",
                                                "..", "e\u0301", "\U0001f600", "\u202e", "\u200d"])),
                     min_size=1, max_size=20).map(lambda parts: "".join(parts).strip()).filter(
    lambda t: t not in ("", ".", ".."))
#: DNS-style names, the only ones Proxmox keeps
DNS_NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
NAMES = st.one_of(hostile_text(40), PLAUSIBLE, DNS_NAMES)
DESCRIPTIONS = st.one_of(hostile_text(200), PLAUSIBLE, st.integers(), st.binary(max_size=8),
                         st.none())


# ---------------------------------------------------------------- the properties


def _only_anyvirt_errors(action: Callable[[], Any]) -> Any:
    """Run ``action``; an AnyvirtError is an answer (returned), anything else fails the test."""
    try:
        return action()
    except AnyvirtError as exc:
        return exc


def _create_round_trip(target: Target, name: str, description: Any = "",
                      counts: dict[str, int] | None = None) -> None:
    """What the core's rules take, every backend takes (or refuses by a rule of its own, named)."""
    counts = {} if counts is None else counts
    try:
        spec = VMSpec(name=name, memory_mib=64, description=description)
    except InvalidSpec as exc:
        assert exc.field and exc.rule, f"InvalidSpec without field/rule: {exc}"
        counts["refused"] = counts.get("refused", 0) + 1
        return
    host = target.host
    made = None
    try:
        try:
            with target.unchanged_on_error():
                made = host.vms.create(spec)
        except AlreadyExists:  # a generated name that is taken (vcsim's own VMs)
            return
        except InvalidSpec:  # the platform's own rule (the host is unchanged: checked above)
            counts["refused"] = counts.get("refused", 0) + 1
            return
        counts["accepted"] = counts.get("accepted", 0) + 1
        assert made.name == name
        info = host.vms.get(name).info()
        assert info.name == name
        assert info.description == spec.description
    finally:
        if made is not None:
            made.delete()


@pytest.mark.parametrize("field", ["name", "description"])
@pytest.mark.parametrize("backend", ["memory", "libvirt", "vsphere", "proxmox"])
def test_fuzz_names_and_descriptions_round_trip_or_are_refused_cleanly(
        request: pytest.FixtureRequest, backend: str, field: str) -> None:
    target: Target = request.getfixturevalue(f"{backend}_target")
    counts: dict[str, int] = {}

    @_settings(EXAMPLES[backend])
    @given(value=NAMES if field == "name" else DESCRIPTIONS)
    def run(value: Any) -> None:
        if field == "name":
            _create_round_trip(target, value, counts=counts)
        else:
            _create_round_trip(target, unique_name("fuzz"), value, counts)

    run()
    _both_seen(counts)


def _both_seen(counts: dict[str, int]) -> None:
    """The run tried both sides of the rules: round trips happened, refusals too."""
    assert counts.get("accepted", 0) >= 5 and counts.get("refused", 0) >= 5, counts


@pytest.mark.parametrize("backend", ["memory", "libvirt", "vsphere", "proxmox"])
def test_fuzz_snapshot_names_and_descriptions(request: pytest.FixtureRequest, backend: str) -> None:
    target: Target = request.getfixturevalue(f"{backend}_target")
    name = unique_name("fuzz-snap")
    vm = target.host.vms.create(VMSpec(name=name, memory_mib=64))

    @_settings(EXAMPLES[backend] // 2)
    @given(snapshot=NAMES, description=DESCRIPTIONS)
    def run(snapshot: str, description: Any) -> None:
        before = [(s.id, s.name) for s in vm.snapshots.list()]
        made = _only_anyvirt_errors(lambda: vm.snapshots.create(snapshot, description=description))
        if isinstance(made, AnyvirtError):
            assert [(s.id, s.name) for s in vm.snapshots.list()] == before
            return
        try:
            again = vm.snapshots.get(snapshot)
            assert again.name == snapshot
            assert again.description == description.replace("\r\n", "\n").replace("\r", "\n")
        finally:
            made.delete()

    try:
        run()
    finally:
        target.remove(name)


@pytest.mark.parametrize("backend", ["memory", "libvirt", "vsphere", "proxmox"])
def test_fuzz_lookups_answer_typed(request: pytest.FixtureRequest, backend: str) -> None:
    target: Target = request.getfixturevalue(f"{backend}_target")

    @_settings(EXAMPLES[backend])
    @given(ref=st.one_of(NAMES, st.integers(), st.none()))
    def run(ref: Any) -> None:
        found = _only_anyvirt_errors(lambda: target.host.vms.get(ref))
        if not isinstance(found, AnyvirtError):
            assert ref in (found.id, found.name)

    run()


# ---------------------------------------------------------------- URIs and options

SCHEMES = ["vsphere", "esxi", "libvirt+qemu+ssh", "memory", "proxmox", "vsphere+http"]
#: a password's start decides what a parser that stops early makes of it: "2024/..." was a
#: port and a path; "PW..." is no port at all
PASSWORD = st.tuples(
    st.sampled_from(["PW\u00a7", "2024", "12"]),
    st.lists(st.one_of(st.characters(codec="utf-8"), st.sampled_from(list("/?#@:%[]&= \t"))),
             min_size=2, max_size=16).map("".join),
).map("".join)


@_settings(600)
@given(uri=st.one_of(st.text(max_size=60), hostile_text(40).map(lambda t: "vsphere://" + t),
                     hostile_text(40).map(lambda t: "memory://x?" + t)))
def test_fuzz_any_string_as_a_uri_is_parsed_or_invalid_spec(uri: str) -> None:
    result = _only_anyvirt_errors(lambda: build_target(uri))
    if isinstance(result, AnyvirtError):
        assert isinstance(result, InvalidSpec)


@_settings(1200)
@given(scheme=st.sampled_from(SCHEMES), user=st.text(max_size=8), password=PASSWORD,
       encoded=st.booleans(), host=st.sampled_from(["vc.example.com", "127.0.0.1", "[::1]", "h"]),
       port=st.one_of(st.none(), st.integers(1, 65535)), path=st.sampled_from(["", "/", "/system"]),
       query=st.sampled_from(["", "?verify=false", "?timeout=5&ca=/x", "?token=u@pam!id=PWtok"]))
def test_fuzz_a_password_never_shows_and_is_parsed_as_meant_or_refused(
        scheme: str, user: str, password: str, encoded: bool, host: str, port: int | None,
        path: str, query: str) -> None:
    written = quote(password, safe="") if encoded else password
    netloc = f"{quote(user, safe='')}:{written}@{host}" + (f":{port}" if port else "")
    uri = f"{scheme}://{netloc}{path}{query}"
    result = _only_anyvirt_errors(lambda: build_target(uri))
    if isinstance(result, AnyvirtError):
        assert isinstance(result, InvalidSpec)
        assert not encoded or result.field in ("user name", "password"), \
            f"a percent-encoded password was refused: {result}"
        for shown in (str(result), repr(result)):
            assert password not in shown and written not in shown
        return
    secret = result.credentials.password
    assert secret is not None, f"the password was taken for something else: {result.safe_uri}"
    got = secret.reveal()
    assert got in (password, unquote(password)), "a password parsed differently from what was meant"
    if encoded:
        assert got == password
    for shown in (result.safe_uri, repr(result), repr(result.credentials), str(result.credentials)):
        assert password not in shown and written not in shown and got not in shown


def test_fuzz_connect_logs_no_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    @_settings(150)
    @given(password=PASSWORD, encoded=st.booleans())
    def run(password: str, encoded: bool) -> None:
        written = quote(password, safe="") if encoded else password
        caplog.clear()
        result = _only_anyvirt_errors(lambda: anyvirt.connect(f"memory://user:{written}@fuzz-logs"))
        if not isinstance(result, AnyvirtError):
            assert password not in repr(result) and password not in result.uri
            result.close()
        for record in caplog.records:
            assert password not in record.getMessage() and written not in record.getMessage()

    run()


OPTION_VALUES = st.one_of(hostile_text(12), st.sampled_from(
    ["inf", "-inf", "nan", "1e308", "1e999", "-1", "0", "0.0", "99999999999999999999", "0x10", "1_0"]))


@_settings(300)
@given(key=st.one_of(st.sampled_from(["nodes", "cpus", "memory_mib", "storage_gib", "latency",
                                      "timeout", "verify", "ca", "without", "password", "overcommit",
                                      "username", "token", "profile"]),
                     hostile_text(10)).filter(lambda key: key != "uri"),
       value=OPTION_VALUES, as_keyword=st.booleans())
def test_fuzz_connect_options_are_bounded_or_refused(key: str, value: str, as_keyword: bool) -> None:
    name = unique_name("fuzz-opt")
    if as_keyword:
        kwargs: dict[str, Any] = {key: value}
        action: Callable[[], Any] = lambda: anyvirt.connect(f"memory://{name}", **kwargs)  # noqa: E731
    else:
        query = f"{_quoted(key)}={_quoted(value)}"
        action = lambda: anyvirt.connect(f"memory://{name}?{query}")  # noqa: E731
    result = _only_anyvirt_errors(action)
    if not isinstance(result, AnyvirtError):
        info = result.info()
        assert 1 <= info.nodes <= 1024
        made = _only_anyvirt_errors(lambda: result.vms.create(VMSpec(name="after-options")))
        assert not isinstance(made, AnyvirtError) or isinstance(made, InvalidSpec), made
        result.close()
    from anyvirt import memory

    memory.reset(name)


def _quoted(text: str) -> str:
    """Percent-encoded where it can be; as it is where not (a lone surrogate goes in raw)."""
    try:
        return quote(text)
    except UnicodeEncodeError:
        return text


@_settings(200)
@given(timeout=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=5),
                         st.booleans(), st.none()))
def test_fuzz_timeouts_are_finite_positive_seconds(timeout: Any) -> None:
    for action in (lambda: build_target("memory://t", timeout=timeout),
                   lambda: build_target(f"memory://t?timeout={_quoted(str(timeout))}")):
        result = _only_anyvirt_errors(action)
        if not isinstance(result, AnyvirtError):
            assert 0 < result.timeout <= 86400


# ---------------------------------------------------------------- backup archives


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text(12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["name", "cpus", "memory_mib", "disks",
                                                             "nics", "file", "format", "size_bytes",
                                                             "vm", "description", "firmware", "mac",
                                                             "network", "sha256", "bus"]) | hostile_text(6),
                                            inner, max_size=6)),
    max_leaves=20)


def _manifest_like() -> st.SearchStrategy[Any]:
    vm = st.fixed_dictionaries({"name": NAMES}, optional={
        "cpus": st.one_of(st.integers(-2, 1 << 40), st.text(max_size=3), st.none()),
        "memory_mib": st.one_of(st.integers(-2, 1 << 50), st.floats(), st.none()),
        "firmware": st.one_of(st.sampled_from(["bios", "efi", "BIOS", ""]), JSON),
        "description": st.one_of(hostile_text(200), PLAUSIBLE, st.integers(), st.none()),
        "guest_os": st.one_of(hostile_text(10), JSON),
        "nics": st.one_of(st.lists(st.dictionaries(st.sampled_from(["network", "mac", "model"]),
                                                   st.one_of(hostile_text(20), JSON), max_size=3),
                                   max_size=2), JSON)})
    disk = st.dictionaries(st.sampled_from(["id", "file", "format", "size_bytes", "bus", "sha256"]),
                           st.one_of(st.sampled_from(["../../etc/passwd", "/etc/passwd", "disks/0.qcow2",
                                                      "qcow2", "raw", "vmdk"]), JSON), max_size=6)
    return st.one_of(JSON, st.fixed_dictionaries(
        {"format": st.one_of(st.integers(0, 3), JSON), "vm": st.one_of(vm, JSON)},
        optional={"disks": st.one_of(st.lists(disk, max_size=2), JSON), "source": JSON}))


def _archive(path: Path, manifest: Any, raw: bytes | None) -> None:
    data = raw if raw is not None else json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tar:
        member = tarfile.TarInfo("manifest.json")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))


def test_fuzz_backup_archives_are_read_or_refused_and_leave_nothing(memory_target: Target,
                                                                     tmp_path: Path) -> None:
    host = memory_target.host

    @_settings(300)
    @given(manifest=_manifest_like(), raw=st.one_of(st.none(), st.binary(max_size=64)),
           name=st.one_of(st.none(), NAMES))
    def run(manifest: Any, raw: bytes | None, name: str | None) -> None:
        path = tmp_path / "fuzz.avbk"
        path.unlink(missing_ok=True)
        _archive(path, manifest, raw)
        read = _only_anyvirt_errors(lambda: migration.read_manifest(path))
        if isinstance(read, AnyvirtError):
            assert isinstance(read, InvalidSpec)
        made = None
        with contextlib.suppress(AnyvirtError), memory_target.unchanged_on_error():
            made = host.restore(path, name=name)
        if made is not None:
            made.delete()

    run()


def test_fuzz_backup_archives_on_the_real_testbeds(libvirt_target: Target, vsphere_target: Target,
                                                   tmp_path: Path) -> None:
    @_settings(40)
    @given(manifest=_manifest_like(), which=st.sampled_from([libvirt_target, vsphere_target]))
    def run(manifest: Any, which: Target) -> None:
        path = tmp_path / "fuzz.avbk"
        path.unlink(missing_ok=True)
        _archive(path, manifest, None)
        made = None
        with contextlib.suppress(AnyvirtError), which.unchanged_on_error():
            made = which.host.restore(path)
        if made is not None:
            made.delete()

    run()


#: fragments of each platform's output; "{id}" and "{name}" become the victim's
PLATFORM_OUTPUT = [
    'UUID="{id}"', "UUID={id}", 'name="{name}"', 'VMState="running"', "memory=0", "cpus=64",
    'CfgFile="/etc/shadow"', 'SnapshotName="{name}"', "</description>", "<uuid>{id}</uuid>",
    "<name>{name}</name>", "<memory unit='KiB'>1</memory>", "]]>", "&amp;", '{"vmid": "{id}"}',
    '"name": "{name}"', "name: {name}", "memory: 1", "cores: 64", "[{name}]", "description: x",
    "\\", "\\n", "\\x1b[31m", '"', "'", "=", "zz=", "#",
]
DISK = [DiskSpec(size_gib=0.01)]  # libvirt snapshots a VM only with a disk
SEPARATORS = st.sampled_from(["\n", "\n\n", '"\n', " ", "", "\t", "\r\n", "\r"])
SHAPED = st.lists(st.tuples(st.sampled_from(PLATFORM_OUTPUT), SEPARATORS), min_size=1,
                  max_size=12).map(lambda parts: "".join(piece + sep for piece, sep in parts))


@pytest.mark.parametrize("backend", ["memory", "libvirt", "vsphere", "proxmox"])
def test_fuzz_platform_shaped_descriptions_never_change_which_vm(
        request: pytest.FixtureRequest, backend: str) -> None:
    """A description (of a VM and of its snapshot) made of another VM's platform output,
    its id and name included, never makes anyvirt read, list or delete that other VM."""
    target: Target = request.getfixturevalue(f"{backend}_target")
    host = target.host
    victim = host.vms.create(VMSpec(name=unique_name("victim"), memory_mib=64, cpus=1, disks=DISK))
    snapshots = anyvirt.Capability.SNAPSHOTS in host.capabilities
    if snapshots:
        victim.snapshots.create("kept", description="the victim's own")

    def victim_seen() -> tuple[Any, ...]:
        got = host.vms.get(victim.id)
        row = {vm.id: vm for vm in host.vms.list()}[victim.id]
        snaps = [(s.id, s.name, s.description) for s in victim.snapshots.list()] if snapshots else []
        return got.name, got.state, got.cpus, got.memory_mib, row.name, row.state, snaps

    seen = victim_seen()

    @_settings(EXAMPLES[backend] // 4)
    @given(shaped=SHAPED)
    def run(shaped: str) -> None:
        text = shaped.replace("{id}", victim.id).replace("{name}", victim.name)
        name = unique_name("evil")
        evil = _only_anyvirt_errors(
            lambda: host.vms.create(VMSpec(name=name, memory_mib=32, cpus=2, disks=DISK,
                                    description=text)))
        if isinstance(evil, AnyvirtError):
            assert isinstance(evil, InvalidSpec), evil
            return
        try:
            assert evil.id != victim.id
            found = host.vms.get(name)
            assert (found.id, found.name, found.cpus, found.memory_mib) == (evil.id, name, 2, 32)
            assert found.state is anyvirt.PowerState.STOPPED
            info = evil.info()
            assert (info.id, info.name, info.description) == (evil.id, name,
                                                            text.replace("\r\n", "\n").replace("\r", "\n"))
            if snapshots:
                made = _only_anyvirt_errors(lambda: evil.snapshots.create("s1", description=text))
                if not isinstance(made, AnyvirtError):
                    assert [s.id for s in evil.snapshots.list()] == [made.id]
                    assert evil.snapshots.get("s1").description == info.description
            assert victim_seen() == seen
        finally:
            evil.delete(disks=True)
        assert evil.id not in {vm.id for vm in host.vms.list()}
        assert victim_seen() == seen

    try:
        run()
    finally:
        target.remove(victim.name)


def test_the_fuzz_can_fail() -> None:
    """The properties are not vacuous: a refused name is refused, an accepted one kept."""
    with pytest.raises(InvalidSpec):
        VMSpec(name="\x00")
    assert VMSpec(name="ok").name == "ok"
    with anyvirt.connect("memory://fuzz-can-fail") as host:
        host.vms.create(VMSpec(name="twice"))
        with pytest.raises(AlreadyExists):
            host.vms.create(VMSpec(name="twice"))
