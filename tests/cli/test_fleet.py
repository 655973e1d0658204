"""Issue 24 item 6: commands across several connections (URIs or profiles), with the host
named on every row, node names, and node ids that stay the same from one command to the next."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import run

import anyvirt
from anyvirt import VMSpec, memory


@pytest.fixture
def two() -> Iterator[tuple[str, str]]:
    names = [f"fleet-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield f"memory://{names[0]}", f"memory://{names[1]}"
    for name in names:
        memory.reset(name)


def test_vms_lists_several_hosts_with_a_host_column(two: tuple[str, str]) -> None:
    a, b = two
    anyvirt.connect(a).vms.create(VMSpec(name="web1"))
    anyvirt.connect(b).vms.create(VMSpec(name="db1"))
    shown = run("--format", "tsv", "vms", a, b)
    assert shown.exit_code == 0, shown.output
    header, *rows = shown.stdout.splitlines()
    assert header.split("\t") == ["host", "name", "state", "cpus", "memory", "node"]
    assert [row.split("\t")[:2] for row in rows] == [[a, "web1"], [b, "db1"]]
    assert all(row.split("\t")[5] == "node1" for row in rows)  # names, not ids


def test_vms_json_has_the_host_and_the_node_name(two: tuple[str, str]) -> None:
    a, b = two
    anyvirt.connect(a).vms.create(VMSpec(name="web1"))
    anyvirt.connect(b).vms.create(VMSpec(name="db1"))
    listed = json.loads(run("vms", a, b, "--json").stdout)
    assert [(vm["host"], vm["name"], vm["node_name"]) for vm in listed] == [
        (a, "web1", "node1"), (b, "db1", "node1")]
    alone = json.loads(run("vms", a, "--json").stdout)  # one host: the same fields
    assert [(vm["host"], vm["node_name"]) for vm in alone] == [(a, "node1")]


def test_profiles_name_connections_too(two: tuple[str, str], tmp_path: Path) -> None:
    a, b = two
    anyvirt.connect(b).vms.create(VMSpec(name="db1"))
    config = tmp_path / "config.toml"
    config.write_text(f'[profiles.lab]\nuri = "{b}"\n')
    shown = run("--format", "tsv", "vms", a, "lab", env={"ANYVIRT_CONFIG": str(config)})
    assert shown.exit_code == 0, shown.output
    assert [row.split("\t")[:2] for row in shown.stdout.splitlines()[1:]] == [[b, "db1"]]


def test_a_failed_connection_does_not_hide_the_others(two: tuple[str, str]) -> None:
    a, _ = two
    anyvirt.connect(a).vms.create(VMSpec(name="web1"))
    dead = "libvirt+qemu+tcp://ops:s3cret-pw@127.0.0.1:1/system"
    shown = run("--format", "tsv", "vms", a, dead)
    assert shown.exit_code == 6, shown.output  # the failure's own code
    assert [row.split("\t")[:2] for row in shown.stdout.splitlines()[1:]] == [[a, "web1"]]
    assert "1 of 2 connections failed" in shown.stderr
    assert "libvirt+qemu+tcp://ops@127.0.0.1:1/system" in shown.stderr
    assert "s3cret-pw" not in shown.output


def test_watch_follows_one_connection(two: tuple[str, str]) -> None:
    shown = run("vms", *two, "--watch")
    assert shown.exit_code == 2 and "one connection" in shown.output


def test_vm_show_looks_on_every_connection(two: tuple[str, str]) -> None:
    a, b = two
    vm = anyvirt.connect(b).vms.create(VMSpec(name="db1"))
    shown = run("--format", "plain", "vm", "show", a, b, "db1")
    assert shown.exit_code == 0, shown.output
    assert f"on {b}" in shown.stdout and vm.id in shown.stdout
    as_json = json.loads(run("vm", "show", a, b, "db1", "--json").stdout)
    assert [(item["host"], item["id"], item["node_name"]) for item in as_json] == [(b, vm.id, "node1")]
    alone = json.loads(run("vm", "show", b, "db1", "--json").stdout)  # one host: the same fields
    assert (alone["host"], alone["node_name"]) == (b, "node1")
    nowhere = run("vm", "show", a, b, "nothere")
    assert nowhere.exit_code == 3 and "any of the 2 connections" in nowhere.output


def test_the_embedded_qemus_node_id_is_the_same_in_every_command(tmp_path: Path) -> None:
    """libvirt's embedded driver makes up a host UUID each time it opens: each command is
    a process of its own, so each saw another node id."""
    uri = f"libvirt+qemu:///embed?root={tmp_path / 'embed'}"
    ids = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-m", "anyvirt.cli.main", "nodes", uri, "--json"],
                             capture_output=True, text=True, timeout=300, check=True).stdout
        (node,) = json.loads(out)
        ids.append(node["id"])
    assert ids[0] == ids[1]
    uuid.UUID(ids[0])
