"""Every CLI output path escapes what users and platforms wrote (issue 17 #9), and every
command taking a path answers a bad one with a typed error (issue 17 #10).

The hostile names are planted in the memory host's own records, as a platform
whose tools accept them would hold them (anyvirt's API refuses control
characters in names it is given, but shows whatever a platform lists).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from cli_support import run
from click.testing import CliRunner, Result

import anyvirt
from anyvirt import DiskSpec, VMSpec, memory
from anyvirt.cli.main import cli

#: an unterminated OSC (sets the terminal's title, swallows what follows), a screen clear,
#: a bell, a right-to-left override, a C1 CSI and rich markup
HOSTILE_VM = "evil\x1b]0;owned"
HOSTILE_SNAP = "snap\x1b[2J\x07"
HOSTILE_DESCRIPTION = "note\u202eetirw\x9b31m[bold red]x[/]"
HOSTILE_NODE = "node\x1b]0;n\x07"
RAW = ("\x1b", "\x07", "\u202e", "\x9b")


@pytest.fixture
def uri() -> Iterator[str]:
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    memory.reset(name)


@pytest.fixture
def hostile(uri: str) -> Iterator[anyvirt.Host]:
    with anyvirt.connect(uri) as host:
        vm = host.vms.create(VMSpec(name="plain", cpus=1, memory_mib=64,
                                    disks=[DiskSpec(size_gib=0.01)]))
        first = vm.snapshots.create("s1")
        vm.snapshots.create("s2")
        world = host.driver.native
        record = world.vms[vm.id]
        record.name = HOSTILE_VM
        record.description = HOSTILE_DESCRIPTION
        snap = record.snapshots[first.id]
        snap.info = attrs.evolve(snap.info, name=HOSTILE_SNAP, description=HOSTILE_DESCRIPTION)
        for node_id, node in list(world.nodes.items()):
            world.nodes[node_id] = attrs.evolve(node, name=HOSTILE_NODE)
        yield host


def _clean(result: Result, what: str) -> None:
    for stream in (result.stdout, result.stderr):
        for char in RAW:
            assert char not in stream, f"{what}: {char!r} reached the terminal:\n{stream!r}"


@pytest.mark.parametrize("fmt", ["table", "plain", "tsv", "names", "json"])
def test_every_listing_escapes_hostile_names(hostile: anyvirt.Host, uri: str, fmt: str,
                                             tmp_path: Path) -> None:
    vm_id = hostile.vms.list()[0].id
    archive = tmp_path / "plain.avbk"
    hostile.vms.get(vm_id).backup(archive)  # its manifest carries the hostile name
    commands = [
        ["vms", uri],
        ["vm", "show", uri, vm_id],
        ["snapshot", "list", uri, vm_id],
        ["nodes", uri],
        ["info", uri],
        ["backup-info", str(archive)],
        ["verify", str(archive)],
        ["plan", uri, vm_id, "memory://hostile-target"],
    ]
    for command in commands:
        result = run("--format", fmt, *command)
        # a plan names the copy after its source, and refuses the name for it: an error to show
        assert result.exit_code == (2 if command[0] == "plan" else 0), (command, result.output)
        _clean(result, " ".join(command))
        if fmt in ("table", "plain", "tsv") and command[0] not in ("info", "verify", "plan"):
            shown = "\\x1b" in result.stdout or "\\u202e" in result.stdout
            assert shown, (command, result.stdout)  # shown, escaped


def test_errors_and_progress_messages_escape_hostile_names(hostile: anyvirt.Host, uri: str) -> None:
    vm_id = hostile.vms.list()[0].id
    for args in (["snapshot", "revert", uri, vm_id, "no-such"],
                 ["vm", "start", uri, vm_id + "x"],
                 ["snapshot", "delete", uri, vm_id, HOSTILE_SNAP],
                 ["vm", "delete", uri, vm_id]):
        result = run(*args)
        _clean(result, " ".join(args))


def test_snapshot_list_shows_the_tree_escaped(hostile: anyvirt.Host, uri: str) -> None:
    vm_id = hostile.vms.list()[0].id
    result = run("--format", "table", "snapshot", "list", uri, vm_id)
    assert result.exit_code == 0, result.output
    assert "evil\\x1b]0;owned" in result.stdout
    assert "snap\\x1b[2J\\x07" in result.stdout and "s2" in result.stdout
    assert "\\u202e" in result.stdout and "[bold red]x[/]" in result.stdout  # markup is text


# -- paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["image", "demo", "/proc/nope.img"],
    ["verify", "/proc/self/mem"],
    ["backup-info", "/proc/self/mem"],
    ["restore", "memory://paths", "/proc/self/mem"],
], ids=["image", "verify", "backup-info", "restore"])
def test_a_path_that_cannot_be_used_is_a_typed_error(args: list[str]) -> None:
    result = run("--json", *args)
    error = json.loads(result.stderr.strip().splitlines()[-1])
    assert error["type"] == "InvalidSpec" and result.exit_code == 2, error
    assert "/proc/" in error["message"]


def test_a_backup_to_a_path_that_cannot_be_written_is_a_typed_error(hostile: anyvirt.Host,
                                                                   uri: str) -> None:
    vm_id = hostile.vms.list()[0].id
    result = run("--json", "backup", uri, vm_id, "/proc/nope.avbk")
    error = json.loads(result.stderr.strip().splitlines()[-1])
    assert error["type"] == "InvalidSpec" and result.exit_code == 2, error
    assert "cannot write /proc/nope.avbk" in error["message"]


def test_completion_offers_no_name_holding_control_characters(hostile: anyvirt.Host,
                                                               uri: str) -> None:
    hostile.vms.create(VMSpec(name="evident", cpus=1, memory_mib=64))
    result = CliRunner().invoke(cli, [], prog_name="anyvirt",
                                env={"_ANYVIRT_COMPLETE": "bash_complete",
                                         "COMP_WORDS": f"anyvirt vm start {uri} ev",
                                         "COMP_CWORD": "4"})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["plain,evident"]
    _clean(result, "completion")
