"""Issue 24 item 7: the generated matrix marks what a connection has only under a condition
(a version, a configuration), with the condition; a connection explains each "no"."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

import anyvirt
from anyvirt import Capability
from anyvirt.cli.main import cli
from anyvirt.cli.matrix import columns, support_matrix_markdown
from anyvirt.registry import all_drivers


def _cell(table: str, capability: Capability, backend: str) -> str:
    header = next(line for line in table.splitlines() if line.startswith("| capability |"))
    titles = [cell.strip().strip("`") for cell in header.strip("|").split("|")]
    line = next(row for row in table.splitlines() if row.startswith(f"| `{capability.value}` |"))
    return [cell.strip() for cell in line.strip("|").split("|")][titles.index(backend)]


def _note(table: str, cell: str) -> str:
    number = re.fullmatch(r"if \[(\d+)\]", cell)
    assert number, f"not a conditional cell: {cell!r}"
    return next(line for line in table.splitlines() if line.startswith(f"- [{number[1]}] "))


def test_the_matrix_says_proxmox_imports_images_from_82_on() -> None:
    table = support_matrix_markdown()
    note = _note(table, _cell(table, Capability.VM_CREATE_FROM_IMAGE, "proxmox"))
    assert "Proxmox VE 8.2 or later" in note


def test_the_matrix_says_what_the_embedded_qemu_lacks() -> None:
    table = support_matrix_markdown()
    for capability in (Capability.LIVE_MIGRATION, Capability.CLONE_RUNNING):
        assert "embedded QEMU" in _note(table, _cell(table, capability, "libvirt"))
    assert _cell(table, Capability.VM_CREATE, "libvirt") == "yes"
    assert "vCenter" in _note(table, _cell(table, Capability.LIVE_MIGRATION, "esxi / vsphere"))


def test_a_condition_is_only_ever_on_what_a_driver_can_offer() -> None:
    from anyvirt.cli.matrix import notes  # new with the conditions

    for scheme, driver in all_drivers().items():
        assert set(driver.capability_conditions) <= driver.possible_capabilities, scheme
    assert all(note.condition for note in notes(columns()))


def test_the_libvirt_conditions_hold_on_a_real_connection() -> None:
    """What the matrix says of the test driver is what a test:/// connection has."""
    with anyvirt.connect("libvirt+test:///default") as host:
        conditions = host.driver.capability_conditions
        for capability in host.driver.possible_capabilities:
            lacks = "test driver" in conditions.get(capability, "")
            assert (capability not in host.capabilities) == lacks, capability
            assert bool(host.why_not(capability)) == lacks, capability


def test_capabilities_of_a_connection_explain_each_no() -> None:
    shown = CliRunner().invoke(cli, ["capabilities", "libvirt+test:///default", "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    missing = {cap.value for cap in Capability} - set(data["capabilities"])
    assert missing and set(data["why_not"]) == missing
    assert all(data["why_not"].values())
    table = CliRunner().invoke(cli, ["--format", "tsv", "capabilities", "libvirt+test:///default"])
    header, *rows = table.stdout.splitlines()
    assert header.split("\t")[-1] == "why not"
    live = next(row.split("\t") for row in rows if row.startswith("migration.live\t"))
    assert live[2] == "no" and "test driver" in live[-1]


def test_capabilities_all_prints_the_conditions() -> None:
    shown = CliRunner().invoke(cli, ["--format", "plain", "capabilities", "--all"])
    assert shown.exit_code == 0, shown.output
    assert "if [" in shown.stdout and "Proxmox VE 8.2 or later" in shown.stdout
