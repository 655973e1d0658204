"""``anyvirt backup --to``, ``backups``, ``restore --to``, ``repo verify|prune|import|export``
against memory:// hosts in process (their state is shared per host name within one
process) and real repositories in a temporary directory."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from cli_support import run, run_json

import anyvirt
from anyvirt import DiskSpec, NicSpec, PowerState, VMSpec
from anyvirt.cli.exit_codes import ExitCode
from anyvirt.testing.disk_bytes import pattern

MIB = 1024 * 1024
PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def web1(hosts: tuple[anyvirt.Host, anyvirt.Host], tmp_path: Path) -> anyvirt.VM:
    """A stopped VM whose 24 MiB disk holds data in two places and holes elsewhere."""
    disk = tmp_path / "web1.raw"
    with open(disk, "wb") as handle:
        handle.truncate(24 * MIB)
        handle.write(pattern(1, 3 * MIB))
        handle.seek(13 * MIB)
        handle.write(pattern(2, 5 * MIB))
    return hosts[0].vms.create(VMSpec(name="web1", cpus=1, memory_mib=256,
                                      disks=[DiskSpec(image=str(disk))],
                                      nics=[NicSpec(network="default")]))


def guest_bytes(vm: anyvirt.VM) -> bytes:
    """A memory VM's disk as the guest sees it (stored bytes, zero-padded to its size)."""
    info = vm.info().disks[0]
    _fmt, data = vm.native.contents.get(info.id, ("raw", b""))
    return bytes(data) + bytes((info.size_bytes or 0) - len(data))


def change_disk(vm: anyvirt.VM, offset: int, data: bytes) -> None:
    disk = vm.info().disks[0].id
    fmt, old = vm.native.contents[disk]
    buf = bytearray(old)
    buf[offset:offset + len(data)] = data
    vm.native.contents[disk] = (fmt, bytes(buf))


# -- backup, list, restore -----------------------------------------------------------


def test_backup_to_a_repository_lists_and_restores_byte_for_byte(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], web1: anyvirt.VM,
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    first = run_json("backup", uris[0], "web1", "--to", str(repo))["point"]
    assert (first["vm_name"], first["vm_id"], first["incremental"]) == ("web1", web1.id, False)
    assert first["size_bytes"] == 24 * MIB and first["stored_bytes"] > 0
    change_disk(web1, 14 * MIB, pattern(3, 64 * 1024))
    second = run_json("backup", uris[0], "web1", "--to", f"file://{repo}")["point"]
    assert second["incremental"] and second["stored_bytes"] < first["stored_bytes"]

    listed = run_json("backups", str(repo))
    assert [p["id"] for p in listed] == [first["id"], second["id"]]
    assert run_json("backups", str(repo), "--vm", "nobody") == []
    table = run("backups", str(repo), "--vm", "web1")
    assert table.exit_code == 0, table.output + table.stderr
    assert first["id"] in table.stdout and "incremental" in table.stdout

    made = run_json("restore", str(repo), first["id"], "--to", uris[1], "--name", "web1-old")
    assert (made["name"], made["state"], made["point"]) == ("web1-old", "stopped", first["id"])
    old = hosts[1].vms.get("web1-old")
    newest = run("restore", str(repo), second["id"], "--to", uris[1])
    assert newest.exit_code == 0, newest.output + newest.stderr
    assert "web1: restored from" in newest.stdout
    new = hosts[1].vms.get("web1")
    assert guest_bytes(new) == guest_bytes(web1)
    assert guest_bytes(old) != guest_bytes(new)
    again = run("restore", str(repo), second["id"], "--to", uris[1])
    assert again.exit_code == ExitCode.CONFLICT, "the name is taken now"


def test_backup_needs_a_path_or_a_repository_and_a_point_id_is_checked(
    uris: tuple[str, str], web1: anyvirt.VM, tmp_path: Path
) -> None:
    neither = run("backup", uris[0], "web1")
    assert neither.exit_code == ExitCode.INVALID_INPUT and "--to REPO" in neither.stderr
    both = run("backup", uris[0], "web1", str(tmp_path / "a.avbk"), "--to", str(tmp_path / "r"))
    assert both.exit_code == ExitCode.INVALID_INPUT
    assert not (tmp_path / "a.avbk").exists() and not (tmp_path / "r").exists()
    typo = run("backup", uris[0], "webl", "--to", str(tmp_path / "r"))
    assert typo.exit_code == ExitCode.NOT_FOUND and "webl" in typo.stderr
    assert not (tmp_path / "r").exists(), "a VM that is not there makes no repository"
    assert run("backup", uris[0], "web1", "--to", str(tmp_path / "r")).exit_code == 0
    bad = run("restore", str(tmp_path / "r"), "../../etc/passwd", "--to", uris[1])
    assert bad.exit_code == ExitCode.INVALID_INPUT and "not a restore point id" in bad.stderr
    missing = run("backups", str(tmp_path / "nothing-here"))
    assert missing.exit_code == ExitCode.NOT_FOUND
    assert not (tmp_path / "nothing-here").exists(), "listing makes no repository"


# -- running VMs: --shutdown and --snapshot (issue 24 item 8) -------------------------------


@pytest.mark.parametrize("form", ["archive", "repository"])
def test_backup_of_a_running_vm_takes_shutdown_or_snapshot(
    form: str, uris: tuple[str, str], web1: anyvirt.VM, tmp_path: Path
) -> None:
    web1.start()

    def where(n: int) -> list[str]:
        return [str(tmp_path / f"b{n}.avbk")] if form == "archive" else ["--to", str(tmp_path / "r")]

    refused = run("backup", uris[0], "web1", *where(0))
    assert refused.exit_code == ExitCode.CONFLICT, refused.output + refused.stderr
    assert "--shutdown" in refused.stderr or "shutdown=True" in refused.stderr
    assert not (tmp_path / "b0.avbk").exists()
    both = run("backup", uris[0], "web1", *where(0), "--shutdown", "--snapshot")
    assert both.exit_code == ExitCode.INVALID_INPUT

    frozen = run("backup", uris[0], "web1", *where(1), "--snapshot")
    assert frozen.exit_code == 0, frozen.output + frozen.stderr
    assert web1.refresh().state is PowerState.RUNNING, "a snapshot copy leaves it running"
    assert web1.snapshots.list() == [], "the snapshot is removed afterwards"
    stopped = run("backup", uris[0], "web1", *where(2), "--shutdown")
    assert stopped.exit_code == 0, stopped.output + stopped.stderr
    assert web1.refresh().state is PowerState.STOPPED
    if form == "repository":
        points = run_json("backups", str(tmp_path / "r"))
        assert len(points) == 2 and points[1]["incremental"]


# -- encryption: the passphrase from the environment, never shown --------------------------


def test_an_encrypted_repository_takes_its_passphrase_from_the_environment_only(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], web1: anyvirt.VM,
    tmp_path: Path,
) -> None:
    repo = str(tmp_path / "secret")
    env = {"ANYVIRT_REPO_PASSPHRASE": PASSPHRASE}
    made = run("--json", "backup", uris[0], "web1", "--to", repo, "--encrypt", env=env)
    assert made.exit_code == 0, made.output + made.stderr
    config = json.loads((tmp_path / "secret" / "config.json").read_text())
    assert config["encryption"] is not None
    point = json.loads(made.stdout)["point"]["id"]
    results = [made]

    # no passphrase and no terminal to ask on: refused, naming where it comes from
    bare = run("backups", repo, env={"ANYVIRT_REPO_PASSPHRASE": ""})
    results.append(bare)
    assert bare.exit_code == ExitCode.INVALID_INPUT
    assert "encrypted" in bare.stderr and "ANYVIRT_REPO_PASSPHRASE" in bare.stderr
    unset = run("backups", repo, "--passphrase-env", "NO_SUCH_VARIABLE_HERE")
    results.append(unset)
    assert unset.exit_code == ExitCode.INVALID_INPUT and "NO_SUCH_VARIABLE_HERE" in unset.stderr
    wrong = run("backups", repo, env={"ANYVIRT_REPO_PASSPHRASE": "not it"})
    results.append(wrong)
    assert wrong.exit_code != 0

    named = {"MY_REPO_KEY": PASSPHRASE, "ANYVIRT_REPO_PASSPHRASE": ""}
    listed = run("--json", "backups", repo, "--passphrase-env", "MY_REPO_KEY", env=named)
    results.append(listed)
    assert [p["id"] for p in json.loads(listed.stdout)] == [point]
    back = run("--debug", "restore", repo, point, "--to", uris[1], "--passphrase-env",
               "MY_REPO_KEY", env=named)
    results.append(back)
    assert back.exit_code == 0, back.output + back.stderr
    assert guest_bytes(hosts[1].vms.get("web1")) == guest_bytes(web1)
    checked = run("repo", "verify", repo, env=env)
    results.append(checked)
    assert checked.exit_code == 0 and "ok" in checked.stdout
    for result in results:
        assert PASSPHRASE not in result.stdout + result.stderr
    for file in (tmp_path / "secret").rglob("*"):
        if file.is_file():
            assert PASSPHRASE.encode() not in file.read_bytes()


# -- verify --------------------------------------------------------------------------


def test_verify_names_a_damaged_chunk_and_exits_1(
    uris: tuple[str, str], web1: anyvirt.VM, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    assert run("backup", uris[0], "web1", "--to", str(repo)).exit_code == 0
    good = run_json("repo", "verify", str(repo))
    assert good["ok"] and good["points"] == 1 and good["chunks"] >= 2 and good["problems"] == []
    chunk = next(p for p in sorted((repo / "chunks").rglob("*")) if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    bad = run("--json", "repo", "verify", str(repo))
    assert bad.exit_code == ExitCode.FAILURE
    report = json.loads(bad.stdout)
    assert not report["ok"] and any(chunk.name in p for p in report["problems"])
    assert json.loads(bad.stderr)["type"] == "Damaged"
    table = run("repo", "verify", str(repo))
    assert table.exit_code == ExitCode.FAILURE and chunk.name in table.stdout


# -- prune ---------------------------------------------------------------------------


def test_prune_shows_what_goes_asks_first_and_keeps_what_the_rules_keep(
    uris: tuple[str, str], web1: anyvirt.VM, tmp_path: Path
) -> None:
    repo = str(tmp_path / "repo")
    ids = []
    for n in range(3):
        change_disk(web1, n * MIB, pattern(10 + n, 4096))
        ids.append(run_json("backup", uris[0], "web1", "--to", repo)["point"]["id"])

    assert run("repo", "prune", repo).exit_code == ExitCode.INVALID_INPUT, "a rule is needed"
    dry = run("repo", "prune", repo, "--keep-last", "1", "--dry-run")
    assert dry.exit_code == 0 and "2 of 3 point(s) go" in dry.stdout
    assert ids[0] in dry.stdout and ids[2] not in dry.stdout.split("points to forget")[1]
    planned = run_json("repo", "prune", repo, "--keep-last", "1", "--dry-run")
    assert [p["id"] for p in planned["removed"]] == ids[:2] and planned["kept"] == [ids[2]]
    declined = run("repo", "prune", repo, "--keep-last", "1", stdin="n\n")
    assert declined.exit_code == 1 and "nothing was changed" in declined.stderr
    no_terminal = run("repo", "prune", repo, "--keep-last", "1")
    assert no_terminal.exit_code == 1
    assert [p["id"] for p in run_json("backups", repo)] == ids, "nothing went"

    done = run("repo", "prune", repo, "--keep-last", "2", "--yes")
    assert done.exit_code == 0 and "forgot 1 point(s)" in done.stdout
    pruned = run_json("repo", "prune", repo, "--keep-last", "1")
    assert pruned["removed"] == [ids[1]] and pruned["kept"] == [ids[2]]
    assert pruned["removed_chunks"] >= 1 and pruned["freed_bytes"] > 0
    assert [p["id"] for p in run_json("backups", repo)] == [ids[2]]
    assert run_json("repo", "verify", repo)["ok"]


# -- portable archives in and out --------------------------------------------------------


def test_archives_go_into_and_out_of_a_repository_byte_for_byte(
    uris: tuple[str, str], hosts: tuple[anyvirt.Host, anyvirt.Host], web1: anyvirt.VM,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "web1.avbk"
    assert run("backup", uris[0], "web1", str(archive)).exit_code == 0
    repo = str(tmp_path / "repo")
    junk = tmp_path / "junk.avbk"
    junk.write_bytes(b"not a tar")
    for wrong in (tmp_path / "missing.avbk", junk):
        refused = run("repo", "import", repo, str(wrong))
        assert refused.exit_code == ExitCode.INVALID_INPUT, refused.output + refused.stderr
        assert not os.path.exists(repo), "an archive that cannot be imported makes no repository"
    imported = run_json("repo", "import", repo, str(archive))["point"]
    assert imported["vm_name"] == "web1" and imported["vm_id"].startswith("archive:")
    out = tmp_path / "out.avbk"
    exported = run_json("repo", "export", repo, imported["id"], str(out))
    assert exported["path"] == str(out) and exported["archive_bytes"] == out.stat().st_size
    verified = run_json("verify", str(out))
    assert verified["ok"] and verified["checksums"]
    assert run("restore", uris[1], str(out)).exit_code == 0
    assert guest_bytes(hosts[1].vms.get("web1")) == guest_bytes(web1)
    table = run("repo", "export", repo, imported["id"], str(out))
    assert table.exit_code == ExitCode.CONFLICT, "an archive is never overwritten"
    damaged = tmp_path / "damaged.avbk"
    data = bytearray(archive.read_bytes())
    data[-20 * 1024] ^= 0xFF  # inside the last disk member
    damaged.write_bytes(bytes(data))
    refused = run("repo", "import", repo, str(damaged))
    assert refused.exit_code == ExitCode.INVALID_INPUT, refused.output + refused.stderr
    assert [p["id"] for p in run_json("backups", repo)] == [imported["id"]]
    assert os.path.exists(repo)


# -- the embedded QEMU: a real libvirt host with no daemon ------------------------------------


def test_backup_and_restore_on_the_embedded_qemu_byte_for_byte(embed_uri: str, tmp_path: Path) -> None:
    disk = tmp_path / "db1.raw"
    with open(disk, "wb") as handle:
        handle.truncate(32 * MIB)
        handle.write(pattern(21, 2 * MIB))
        handle.seek(20 * MIB)
        handle.write(pattern(22, 3 * MIB))
    with anyvirt.connect(embed_uri) as host:
        vm = host.vms.create(VMSpec(name=f"db1-{uuid.uuid4().hex[:6]}", cpus=1, memory_mib=32,
                                    disks=[DiskSpec(image=str(disk))], nics=[]))
        copy_name = f"{vm.name}-copy"
        try:
            repo = str(tmp_path / "repo")
            point = run_json("backup", embed_uri, vm.name, "--to", repo)["point"]
            assert point["source_backend"] == "libvirt" and point["size_bytes"] == 32 * MIB
            made = run_json("restore", repo, point["id"], "--to", embed_uri, "--name", copy_name)
            assert made["name"] == copy_name and made["state"] == "stopped"
            # the copy backed up again stores no new chunk: every byte is the same
            again = run_json("backup", embed_uri, copy_name, "--to", repo)["point"]
            with anyvirt.BackupRepository(repo, create=False) as opened:
                first, second = (opened.point(p["id"]) for p in (point, again))
                assert opened._index(first, 0) == opened._index(second, 0)
            assert again["stored_bytes"] < 64 * 1024, "only the index is new"
        finally:
            for name in (copy_name, vm.name):
                if host.vms.exists(name):
                    host.vms.get(name).delete(disks=True)


# -- hostile names ---------------------------------------------------------------------


def test_point_listings_and_messages_escape_a_hostile_vm_name(uris: tuple[str, str],
                                                              web1: anyvirt.VM,
                                                              tmp_path: Path) -> None:
    """A platform may list a name anyvirt would refuse (planted in the memory host's own
    record, as in tests/test_cli_hostile_output.py): every output shows it escaped."""
    hostile = "evil\x1b]0;owned\u202e"
    web1.host.driver.native.vms[web1.id].name = hostile
    repo = str(tmp_path / "repo")
    made = run("backup", uris[0], web1.id, "--to", repo)
    assert made.exit_code == 0, made.output + made.stderr
    results = [made]
    for fmt in ("table", "plain", "tsv", "names", "json"):
        results.append(run("--format", fmt, "backups", repo))
    results.append(run("repo", "prune", repo, "--keep-last", "0", "--dry-run"))
    for result in results:
        assert result.exit_code == 0, result.output + result.stderr
        for raw in ("\x1b", "\u202e"):
            assert raw not in result.stdout + result.stderr
    assert "\\x1b" in results[1].stdout, "shown, escaped"
