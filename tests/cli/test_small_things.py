"""Issue 24 item 11: a mistyped VM name gets "did you mean", a libvirt URI without a driver
is bad input (2), libvirt's own schemes get the anyvirt URI to type, and ``info`` says what
its limits are."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import anyvirt
from anyvirt import VMSpec, memory
from anyvirt.cli.main import cli


@pytest.fixture
def uri() -> Iterator[str]:
    name = f"small-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    memory.reset(name)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("words", [["vm", "show"], ["vm", "start"], ["snapshot", "list"]])
def test_a_mistyped_vm_name_gets_did_you_mean(uri: str, words: list[str]) -> None:
    anyvirt.connect(uri).vms.create(VMSpec(name="web1"))
    code, out = run(*words, uri, "wbe1")
    assert code == 3, out
    assert "did you mean 'web1'?" in out


def test_a_name_like_none_gets_no_suggestion(uri: str) -> None:
    anyvirt.connect(uri).vms.create(VMSpec(name="web1"))
    code, out = run("vm", "show", uri, "database")
    assert code == 3 and "did you mean" not in out, out


def test_a_libvirt_uri_without_a_driver_is_bad_input() -> None:
    code, out = run("vms", "libvirt:///system")
    assert code == 2, out
    assert "libvirt+qemu:///system" in out
    with pytest.raises(anyvirt.InvalidSpec):
        anyvirt.connect("libvirt:///system")


@pytest.mark.parametrize(("typed", "meant"), [
    ("qemu:///system", "libvirt+qemu:///system"),
    ("qemu+ssh://root@kvm1/system", "libvirt+qemu+ssh://root@kvm1/system"),
    ("pve://root@pve1:8006", "proxmox://root@pve1:8006"),
])
def test_another_tools_scheme_gets_ours(typed: str, meant: str) -> None:
    code, out = run("vms", typed)
    assert code == 2, out
    assert f"did you mean {meant}?" in out


def test_the_suggestion_never_repeats_a_password() -> None:
    code, out = run("vms", "qemu+tcp://root:hunter2@kvm1/system")
    assert code == 2 and "hunter2" not in out and "libvirt+qemu+tcp://root@kvm1" in out, out
