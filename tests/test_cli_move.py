"""``anyvirt plan / move / backup / restore / backup-info`` against two memory:// hosts, in process.

memory:// state is shared per host name within one process, so the VMs the
tests create through the API are the ones the CLI sees, and each test gets
two fresh host names (reset afterwards).
"""

from __future__ import annotations

import json
import re
import tarfile
import uuid
from pathlib import Path

import click
import pytest
from cli_support import run, run_json

import anyvirt
from anyvirt import DiskSpec, NicSpec, PowerState, VMSpec, memory
from anyvirt.cli.exit_codes import ExitCode
from anyvirt.cli.main import cli

MAP = ("--network-map", "lab-only=default")  # the target has no lab-only network
BOOT_SECTOR = b"\xeb\x3c" + b"\x00" * 508 + b"\x55\xaa" + b"payload" * 100


@pytest.fixture
def efi_vm(hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path) -> anyvirt.VM:
    """A stopped EFI VM with a disk that has content and a NIC on a network the target lacks."""
    image = tmp_path / "boot.img"
    image.write_bytes(BOOT_SECTOR)
    return hosts[0].vms.create(VMSpec(
        name="app1", cpus=2, memory_mib=1024, firmware="efi",
        disks=[DiskSpec(image=str(image), bus="virtio")],
        nics=[NicSpec(network="default", model="virtio", mac="52:54:00:aa:bb:01"),
              NicSpec(network="lab-only")],
    ))


def disk_bytes(vm: anyvirt.VM) -> bytes:
    """The memory backend keeps disk content; trailing zeros differ after a qcow2 round trip."""
    data: bytes = vm.native.contents["disk0"][1]
    return data.rstrip(b"\0")


# -- plan ----------------------------------------------------------------------------


def test_plan_shows_efi_state_lost_and_changes_nothing(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    result = run("plan", uris[0], "app1", uris[1], *MAP)
    assert result.exit_code == 0, result.output + result.stderr
    assert "efi-state-lost" in result.stdout
    assert "UEFI variables" in result.stdout, "the message is shown, not only the code"
    assert "lab-only -> default" in result.stdout, "the network mapping is shown"
    assert hosts[1].vms.list() == [], "planning creates nothing"


def test_plan_of_an_unmapped_network_exits_2_naming_it(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    result = run("plan", uris[0], "app1", uris[1])
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "lab-only" in result.stderr and "--network-map" in result.stderr
    bad = run("plan", uris[0], "app1", uris[1], "--network-map", "lab-only")
    assert bad.exit_code == ExitCode.INVALID_INPUT and "SOURCE=TARGET" in bad.stderr


def test_plan_json_has_the_mapped_spec_and_typed_warnings(
    uris: tuple[str, str], efi_vm: anyvirt.VM
) -> None:
    plan = run_json("plan", uris[0], "app1", uris[1], *MAP, "--name", "app1-new")
    assert plan["source_uri"] == uris[0]
    assert plan["target_uri"] == uris[1]
    assert plan["source"]["id"] == efi_vm.id
    assert plan["spec"]["name"] == "app1-new"
    assert (plan["spec"]["cpus"], plan["spec"]["memory_mib"]) == (2, 1024)
    assert plan["spec"]["disks"] == [{"source_disk": "disk0", "bus": "virtio"}]
    assert [n["network"] for n in plan["spec"]["nics"]] == ["default", "default"]
    assert [(n["source"], n["target"], n["how"]) for n in plan["networks"]] == [
        ("default", "default", "same name"), ("lab-only", "default", "mapped")]
    assert plan["disks"][0]["id"] == "disk0" and plan["disks"][0]["target_format"] == "raw"
    codes = {w["code"] for w in plan["warnings"]}
    assert codes == {"efi-state-lost"}
    assert all(w["message"] for w in plan["warnings"])


def test_plan_onto_a_taken_name_exits_4(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    hosts[1].vms.create(VMSpec(name="app1"))
    result = run("plan", uris[0], "app1", uris[1], *MAP)
    assert result.exit_code == ExitCode.CONFLICT
    assert result.stderr.startswith("error: ")


def test_plan_of_a_missing_vm_exits_3(uris: tuple[str, str],
                                      hosts: tuple[anyvirt.Host, anyvirt.Host]) -> None:
    assert run("plan", uris[0], "nope", uris[1], *MAP).exit_code == ExitCode.NOT_FOUND


def test_plan_source_uri_may_come_from_the_environment(
    uris: tuple[str, str], efi_vm: anyvirt.VM
) -> None:
    result = run("--json", "plan", "app1", uris[1], *MAP, env={"ANYVIRT_URI": uris[0]})
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["source_uri"] == uris[0]


# -- move ----------------------------------------------------------------------------


def test_move_with_yes_creates_the_vm_on_the_target_and_keeps_the_source(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    source, target = hosts
    result = run("move", uris[0], "app1", uris[1], *MAP, "--yes")
    assert result.exit_code == 0, result.output + result.stderr
    assert "efi-state-lost" in result.stdout, "the warnings come before the move"
    assert "moved" in result.stdout
    copy = target.vms.get("app1")
    assert copy.id in result.stdout
    assert copy.state is PowerState.STOPPED, "a stopped source gives a stopped copy"
    assert disk_bytes(copy) == disk_bytes(efi_vm), "the disk arrives byte for byte"
    assert source.vms.get("app1").id == efi_vm.id, "the source is kept"


def test_move_json_prints_the_result_and_honours_start_and_delete_source(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    source, target = hosts
    efi_vm.start()
    moved = run_json("move", uris[0], "app1", uris[1], *MAP, "--name", "app1-moved", "--shutdown",
                     "--delete-source", "--no-start")
    assert moved["vm_name"] == "app1-moved"
    assert moved["source"] == uris[0] and moved["target"] == uris[1]
    assert moved["live"] is False
    assert "efi-state-lost" in moved["warnings"]
    assert moved["bytes_transferred"] >= len(BOOT_SECTOR)
    copy = target.vms.get("app1-moved")
    assert copy.id == moved["vm_id"]
    assert copy.state is PowerState.STOPPED, "--no-start wins over 'the source was running'"
    assert not source.vms.exists("app1"), "--delete-source removes the source after the copy"


def test_move_of_a_running_vm_without_shutdown_exits_4_and_changes_nothing(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    source, target = hosts
    efi_vm.start()
    result = run("move", uris[0], "app1", uris[1], *MAP, "--yes", "--delete-source")
    assert result.exit_code == ExitCode.CONFLICT, result.output + result.stderr
    assert "stop it first" in result.stderr
    assert target.vms.list() == []
    assert source.vms.get("app1").state is PowerState.RUNNING


def test_move_asks_first_and_does_nothing_when_not_confirmed(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    refused = run("move", uris[0], "app1", uris[1], *MAP, stdin="n\n")
    assert refused.exit_code == 1
    assert "Move it?" in refused.stdout
    assert hosts[1].vms.list() == []
    accepted = run("move", uris[0], "app1", uris[1], *MAP, stdin="y\n")
    assert accepted.exit_code == 0, accepted.output + accepted.stderr
    assert hosts[1].vms.exists("app1")


def test_move_without_stdin_and_without_yes_aborts(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    result = run("move", uris[0], "app1", uris[1], *MAP)
    assert result.exit_code == 1
    assert hosts[1].vms.list() == []


# -- backups -------------------------------------------------------------------------


def test_backup_then_restore_round_trips(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "app1.avbk"
    made = run_json("backup", uris[0], "app1", str(archive))
    assert made["path"] == str(archive)
    assert made["archive_bytes"] == archive.stat().st_size
    assert made["manifest"]["vm"]["name"] == "app1"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json"
    assert any(n.startswith("disks/") for n in names)

    restored = run_json("restore", uris[1], str(archive), "--name", "app1-restored", *MAP)
    assert restored["name"] == "app1-restored"
    assert restored["state"] == "stopped"
    copy = hosts[1].vms.get("app1-restored")
    assert copy.id == restored["id"]
    info = copy.info()
    assert (info.cpus, info.memory_mib, info.firmware.value) == (2, 1024, "efi")
    assert (len(info.disks), len(info.nics)) == (1, 2)
    assert disk_bytes(copy) == disk_bytes(efi_vm)


def test_backup_and_restore_in_table_mode(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "app1.avbk"
    done = run("backup", uris[0], "app1", str(archive))
    assert done.exit_code == 0, done.output + done.stderr
    assert "backed up" in done.stdout
    back = run("restore", uris[1], str(archive), *MAP)
    assert back.exit_code == 0, back.output + back.stderr
    assert hosts[1].vms.exists("app1"), "the archive's name is the default"
    again = run("restore", uris[1], str(archive), *MAP)
    assert again.exit_code == ExitCode.CONFLICT, "the name is taken now"


def test_backup_onto_an_existing_file_exits_4_and_keeps_it(
    uris: tuple[str, str], efi_vm: anyvirt.VM, tmp_path: Path
) -> None:
    existing = tmp_path / "keep.avbk"
    existing.write_bytes(b"precious")
    result = run("backup", uris[0], "app1", str(existing))
    assert result.exit_code == ExitCode.CONFLICT
    assert existing.read_bytes() == b"precious"


def test_backup_info_reads_the_manifest_without_a_host(
    uris: tuple[str, str], efi_vm: anyvirt.VM, tmp_path: Path
) -> None:
    archive = tmp_path / "app1.avbk"
    assert run("backup", uris[0], "app1", str(archive)).exit_code == 0
    memory.reset(uris[0].removeprefix("memory://"))  # the source host is gone
    shown = run("backup-info", str(archive))
    assert shown.exit_code == 0, shown.output + shown.stderr
    assert "anyvirt-backup/2" in shown.stdout
    assert "app1" in shown.stdout
    assert "52:54:00:aa:bb:01" in shown.stdout
    manifest = run_json("backup-info", str(archive))
    assert manifest["format"] == "anyvirt-backup/2"
    assert manifest["source"]["uri"] == uris[0]
    assert [d["id"] for d in manifest["disks"]] == ["disk0"]


def test_backup_info_of_a_non_archive_exits_2(tmp_path: Path) -> None:
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello\n")
    result = run("backup-info", str(not_tar))
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "not an anyvirt backup" in result.stderr
    other_tar = tmp_path / "other.tar"
    with tarfile.open(other_tar, "w") as tar:
        tar.add(not_tar, arcname="notes.txt")
    assert run("backup-info", str(other_tar)).exit_code == ExitCode.INVALID_INPUT
    assert run("backup-info", str(tmp_path / "missing.avbk")).exit_code == ExitCode.INVALID_INPUT


# -- secrets -------------------------------------------------------------------------


def test_passwords_from_the_environment_are_never_printed(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM,
    tmp_path: Path,
) -> None:
    password = "s3cret-" + uuid.uuid4().hex
    target_password = "t4rget-" + uuid.uuid4().hex
    # memory:// logs nobody in: it refuses a password given to it (--password-env), and
    # leaves the ambient $ANYVIRT_PASSWORD alone; neither is ever printed
    env = {"AV_SRC_PASSWORD": password, "AV_DST_PASSWORD": target_password,
           "ANYVIRT_PASSWORD": password}
    source = uris[0].replace("memory://", "memory://admin@")
    target = uris[1].replace("memory://", "memory://root@")
    archive = str(tmp_path / "app1.avbk")
    creds = ("--password-env", "AV_SRC_PASSWORD")
    runs = [
        ("plan", source, "app1", target, *MAP),
        ("--json", "plan", source, "app1", target, *MAP),
        ("--debug", "plan", source, "missing", target, *MAP),
        ("backup", source, "app1", archive),
        (*creds, "backup-info", archive),
        ("--json", "restore", target, archive, "--name", "r1", *MAP),
        ("move", source, "app1", target, *MAP, "--yes"),
        ("--debug", "move", source, "app1", target, "--yes", *MAP),  # fails: the name is taken
        ("--debug", *creds, "plan", source, "app1", target, *MAP),  # refused: memory:// takes none
        ("--json", "plan", source, "app1", target, *MAP, "--target-password-env", "AV_DST_PASSWORD"),
    ]
    codes = []
    for args in runs:
        result = run(*args, env=env)
        codes.append(result.exit_code)
        for secret in (password, target_password):
            assert secret not in result.output, args
            assert secret not in result.stderr, args
    assert codes == [0, 0, 3, 0, 0, 0, 0, 4, 2, 2]


def test_unset_target_password_variable_is_a_usage_error(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    result = run("move", uris[0], "app1", uris[1], *MAP, "--yes",
                 "--target-password-env", "AV_NOT_SET_ANYWHERE")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "AV_NOT_SET_ANYWHERE" in result.stderr
    assert hosts[1].vms.list() == []


# -- the documentation page ----------------------------------------------------------

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "migration-and-backup.md"


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_docs_page_tells_what_to_do_about_every_warning_code() -> None:
    text = DOCS_PAGE.read_text(encoding="utf-8")
    for code in anyvirt.WarningCode:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{code.value}` |")), None)
        assert row is not None, f"{code.value} has no row in the warnings table"
        assert row.count("|") == 4 and len(row) > 120, f"{code.value}: meaning and advice expected"


def test_docs_page_covers_every_command_of_the_cli() -> None:
    text = DOCS_PAGE.read_text(encoding="utf-8")
    for command in ("plan", "move", "backup", "restore", "backup-info", "verify"):
        assert f"`anyvirt {command} " in text
        assert cli.get_command(click.Context(cli), command) is not None
    assert "--target-password-env" in text
    assert "anyvirt-backup/2" in text


def test_docs_memory_example_runs() -> None:
    blocks = [b for b in _python_blocks(DOCS_PAGE.read_text(encoding="utf-8")) if "memory://docs-" in b]
    assert len(blocks) == 1
    try:
        exec(compile(blocks[0], str(DOCS_PAGE), "exec"), {"__name__": "docs_example"})
    finally:
        memory.reset("docs-source")
        memory.reset("docs-target")


def test_a_source_that_cannot_export_disks_exits_5(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM, tmp_path: Path
) -> None:
    limited = f"{uris[0]}?without=disk.export"
    assert run("plan", limited, "app1", uris[1], *MAP).exit_code == ExitCode.NOT_SUPPORTED
    assert run("move", limited, "app1", uris[1], *MAP, "--yes").exit_code == ExitCode.NOT_SUPPORTED
    assert run("backup", limited, "app1", str(tmp_path / "x.avbk")).exit_code == ExitCode.NOT_SUPPORTED
    assert hosts[1].vms.list() == []
    assert not (tmp_path / "x.avbk").exists()


def test_verify_checks_an_archive_without_a_host_and_names_the_fault(
    uris: tuple[str, str], efi_vm: anyvirt.VM, tmp_path: Path
) -> None:
    archive = tmp_path / "app1.avbk"
    assert run("backup", uris[0], "app1", str(archive)).exit_code == 0
    ok = run("verify", str(archive))
    assert ok.exit_code == 0, ok.output + ok.stderr
    assert "sha256 of every disk checked" in ok.stdout
    report = run_json("verify", str(archive))
    assert report["ok"] and report["checksums"] and len(report["disks"][0]["sha256"]) == 64
    raw = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        member = tar.getmember(tar.getnames()[-1])
    raw[member.offset_data + 100] ^= 0xFF
    damaged = tmp_path / "damaged.avbk"
    damaged.write_bytes(bytes(raw))
    bad = run("verify", str(damaged))
    assert bad.exit_code == ExitCode.INVALID_INPUT and "sha256" in bad.stderr


def test_move_with_a_network_map_shows_what_was_verified(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], efi_vm: anyvirt.VM
) -> None:
    result = run("move", uris[0], "app1", uris[1], "--yes", "--network-map", "lab-only=default")
    assert result.exit_code == 0, result.output + result.stderr
    assert "verified: config, byte-count, read-back" in result.stdout
    assert "matched by sha256" in result.stdout
    assert [n.network for n in hosts[1].vms.get("app1").info().nics] == ["default", "default"]
