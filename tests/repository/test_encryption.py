"""Encrypted repositories: nothing readable or secret on the storage, wrong passphrases refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from repo_helpers import MIB, image, memory_disk, memory_host, memory_vm

from anyvirt import AuthenticationFailed, BackupRepository, InvalidSpec
from anyvirt.target import Secret

MARKER = b"anyvirt-plaintext-marker-" * 4096


def test_encrypted_round_trip_keeps_no_plaintext_and_no_key(tmp_path: Path) -> None:
    host = memory_host()
    vm = memory_vm(host, "secretive", image(tmp_path / "d.raw", 16 * MIB, [(MIB, MARKER)]))
    root = tmp_path / "repo"
    repo = BackupRepository(root, passphrase=Secret("correct horse battery staple"))
    point = repo.backup(vm)
    stored = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    assert b"anyvirt-plaintext-marker" not in stored
    assert b"secretive" not in stored  # the point (VM name, manifest) is sealed too
    assert b"correct horse" not in stored
    config = json.loads((root / "config.json").read_text())
    assert set(config["encryption"]) == {"cipher", "naming", "kdf", "wrapped_key"}
    assert "correct horse" not in repr(repo) + repr(repo.codec)
    # chunk names are keyed hashes: the plain sha256 of the chunk does not name it
    plain = bytearray(4 * MIB)
    plain[MIB:MIB + len(MARKER)] = MARKER
    names = {p.name for p in (root / "chunks").rglob("*") if p.is_file()}
    assert len(names) == 1 and hashlib.sha256(plain).hexdigest() not in names
    again = BackupRepository(root, passphrase="correct horse battery staple")
    copy = again.restore(point, to=memory_host("t"), name="back")
    assert memory_disk(copy) == memory_disk(vm)
    assert again.verify().ok


def test_a_wrong_or_missing_passphrase_is_refused(tmp_path: Path) -> None:
    BackupRepository(tmp_path / "repo", passphrase="right")
    with pytest.raises(AuthenticationFailed) as caught:
        BackupRepository(tmp_path / "repo", passphrase="wrong")
    assert "wrong" not in str(caught.value)
    with pytest.raises(InvalidSpec, match="encrypted"):
        BackupRepository(tmp_path / "repo")
    BackupRepository(tmp_path / "plain")
    with pytest.raises(InvalidSpec, match="not encrypted"):
        BackupRepository(tmp_path / "plain", passphrase="x")


def test_an_object_moved_onto_another_name_fails_to_open(tmp_path: Path) -> None:
    host = memory_host()
    vm = memory_vm(host, "v", image(tmp_path / "d.raw", 16 * MIB, [(0, MARKER), (8 * MIB, MARKER[::-1])]))
    root = tmp_path / "repo"
    repo = BackupRepository(root, passphrase="p")
    repo.backup(vm)
    first, second = sorted(p for p in (root / "chunks").rglob("*") if p.is_file())[:2]
    second.write_bytes(first.read_bytes())
    problems = repo.verify().problems
    assert any(second.name in p and "authentication" in p for p in problems)
