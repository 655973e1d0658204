"""sftp:// repositories against a real OpenSSH server on loopback (no fake of SFTP)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from repo_helpers import MIB, image, memory_disk, memory_host, memory_vm, pattern
from sshd_support import Sshd

from anyvirt import BackupRepository, ConnectionFailed
from anyvirt.repository.store import TEMP

pytestmark = pytest.mark.skipif(
    shutil.which("/usr/sbin/sshd") is None or os.geteuid() != 0,
    reason="needs Debian's openssh-server (scripts/system-packages.sh test) and root for its "
           "private mount namespace")


def open_repo(server: Sshd, name: str = "repo", **options: object) -> BackupRepository:
    return BackupRepository(server.url(name), key_filename=str(server.key),
                            known_hosts=server.known_hosts, **options)  # type: ignore[arg-type]


def test_backup_and_restore_over_sftp(server: Sshd, tmp_path: Path) -> None:
    vm = memory_vm(memory_host(), "web1", image(tmp_path / "d.raw", 32 * MIB,
                                                [(0, pattern(1, 3 * MIB)), (16 * MIB, pattern(2, MIB))]))
    with open_repo(server, passphrase="over the wire") as repo:
        first = repo.backup(vm)
        second = repo.backup(vm)
        assert second.incremental and second.stored_bytes < 1024
        assert repo.verify().ok
    # the repository is really on the server's disk, and nothing there is plaintext
    stored = b"".join(p.read_bytes() for p in (server.served / "repo").rglob("*") if p.is_file())
    assert len(stored) > 100_000 and pattern(1, 3 * MIB)[:4096] not in stored
    with open_repo(server, passphrase="over the wire") as again:
        assert [p.id for p in again.points()] == [first.id, second.id]
        copy = again.restore(first, to=memory_host("t"), name="back")
    assert memory_disk(copy) == memory_disk(vm)


def test_an_unknown_host_key_is_refused(server: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    other.write_text("")
    with pytest.raises(ConnectionFailed, match="host key"):
        BackupRepository(server.url("repo"), key_filename=str(server.key), known_hosts=other)
    assert not (server.served / "repo").exists()


def test_a_cut_connection_mid_backup_leaves_a_valid_repository(server: Sshd, tmp_path: Path) -> None:
    host = memory_host()
    small = memory_vm(host, "small", image(tmp_path / "s.raw", 8 * MIB, [(0, pattern(4, MIB))]))
    big = memory_vm(host, "big", image(tmp_path / "b.raw", 64 * MIB, [(0, os.urandom(64 * MIB))]))
    repo = open_repo(server, chunk_size=64 * 1024)
    before = repo.backup(small)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            repo.backup(big)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    chunks = server.served / "repo" / "chunks"
    deadline = time.monotonic() + 120
    while sum(1 for p in chunks.rglob("*") if p.is_file()) < 100:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    assert server.cut() >= 1
    thread.join(120)
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionFailed), outcome
    repo.close()
    with open_repo(server) as again:  # a new connection
        assert [p.id for p in again.points()] == [before.id]
        report = again.verify()
        assert report.ok, report.problems
        after = again.backup(small)
        assert [p.id for p in again.points()] == [before.id, after.id]
        assert not [p for p in (server.served / "repo").rglob("*") if TEMP in p.name]
        assert not list((server.served / "repo" / "locks").iterdir())
        assert again.prune(keep_last=5).removed_chunks > 0
        assert again.verify().ok
