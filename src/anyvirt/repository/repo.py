"""The backup repository: incremental forever, deduplicated, verified, restorable anywhere.

Layout (every object sealed by :mod:`anyvirt.repository.codec`)::

    config.json                 format, chunk size, encryption salt/params (nothing secret)
    chunks/<ab>/<id>            a chunk of a disk (4 MiB of guest bytes), named by its hash
    indexes/<point>/<n>         disk n of a point: its chunk ids in order
    points/<point>              a restore point (manifest, facts, indexes' sha256): written last
    locks/<lease>.json          backups and prunes in flight (:mod:`anyvirt.repository.leases`)

A backup writes only chunks the repository lacks (any VM's, any point's), then
the disks' indexes, then the point. Cut anywhere, it leaves complete chunks
(reused by the next backup, removed by a prune if nothing takes them) and
temporary names carrying its dead lease, which the next backup or prune
removes: the repository stays valid and the cut point never appears.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import frozen

from anyvirt.errors import InvalidSpec, NotFound
from anyvirt.kit import streams
from anyvirt.migration import consistency
from anyvirt.migration import manifest as manifests
from anyvirt.migration.archive_check import check_target_storage
from anyvirt.migration.target_spec import nics_for, spec_for
from anyvirt.model import Capability, PowerState, check_name
from anyvirt.repository import chunk_images, codec, leases, points, retention
from anyvirt.repository.pipeline import pipeline
from anyvirt.repository.points import ID_BYTES, ZERO_ID, RestorePoint
from anyvirt.repository.sources import (
    ChangeTracker,
    LiveBackup,
    LiveDisk,
    RawDisk,
    dirty_chunks,
    open_raw,
)
from anyvirt.repository.store import TEMP, Store
from anyvirt.target import Secret, as_secret
from anyvirt.tasks import DEFAULT_TIMEOUT, Job, ProgressCallback

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.operations import HeldVM
    from anyvirt.vm import VM

log = logging.getLogger("anyvirt")
FORMAT = "anyvirt-repository/1"
CONFIG = "config.json"
CHUNK_SIZE = 1024 * 1024
_ZERO = bytes(CHUNK_SIZE)


class PassphraseNeeded(InvalidSpec):
    """The repository is encrypted and was opened without a passphrase (a program may ask
    for one and open it again)."""


@frozen
class VerifyReport:
    """What :meth:`BackupRepository.verify` found; ``ok`` when nothing is missing or damaged."""

    problems: tuple[str, ...]
    chunks: int
    points: int

    @property
    def ok(self) -> bool:
        return not self.problems


@frozen
class PruneReport:
    removed: tuple[str, ...]  # point ids
    kept: tuple[str, ...]
    removed_chunks: int
    freed_bytes: int
    # chunks were left because a backup was in flight (they go at the next prune)
    chunks_deferred: bool


class BackupRepository:
    """A backup repository at ``url``: a directory, ``file://``, ``sftp://user@host/path``
    or another fsspec URL. Made on first use where nothing is (``create=True``), encrypted
    when ``passphrase`` is given. SSH options: ``key_filename``, ``password``,
    ``known_hosts`` (the server's key must be listed there)."""

    def __init__(self, url: str | os.PathLike[str], *, passphrase: Secret | str | None = None,
                 create: bool = True, chunk_size: int = CHUNK_SIZE,
                 password: Secret | str | None = None, key_filename: str | None = None,
                 known_hosts: str | os.PathLike[str] | None = None,
                 storage_options: dict[str, Any] | None = None) -> None:
        # first, before anything can fail: plain texts become Secrets (the URL may carry a
        # password), so no frame here keeps one for a traceback to capture
        held, secret, login = Secret(os.fspath(url)), as_secret(passphrase), as_secret(password)
        del url, passphrase, password
        self.store = Store(held, password=login, key_filename=key_filename,
                           known_hosts=known_hosts, storage_options=storage_options)
        if self.store.exists(CONFIG):
            config = self._read_config()
        elif create:
            config = self._init(secret, chunk_size)
        else:
            raise NotFound(f"no backup repository at {self.store.url}")
        self.chunk_size = int(config["chunk_size"])
        self.codec = codec.Codec(self._keys(config, secret))
        self._known_lock = threading.Lock()

    def __repr__(self) -> str:
        store = getattr(self, "store", None)  # a traceback may show one not yet opened
        return f"BackupRepository({store.url if store else '<not opened>'!r})"

    @property
    def url(self) -> str:
        return self.store.url

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> BackupRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ config
    def _init(self, secret: Secret | None, chunk_size: int) -> dict[str, Any]:
        if not (64 * 1024 <= chunk_size <= 64 * 1024 * 1024) or chunk_size & (chunk_size - 1):
            raise InvalidSpec(f"chunk_size must be a power of two from 64 KiB to 64 MiB, not {chunk_size}")
        if self.store.files(""):
            raise InvalidSpec(f"{self.store.url} holds files but no repository: pick an empty place")
        config: dict[str, Any] = {"format": FORMAT, "chunk_size": chunk_size,
                                  "compression": "zstd", "encryption": None}
        if secret is not None:
            config["encryption"], _ = codec.new_encryption(secret)
        for folder in ("chunks", "indexes", "points", "locks"):
            self.store.makedirs(folder)
        for prefix in range(256):  # sftp and friends need the folders made before writes
            self.store.makedirs(f"chunks/{prefix:02x}")
        self.store.put(CONFIG, json.dumps(config, indent=2).encode(), leases.new_id())
        return config

    def _read_config(self) -> dict[str, Any]:
        try:
            config = json.loads(self.store.get(CONFIG))
            if config.get("format") != FORMAT or config.get("compression") != "zstd":
                raise InvalidSpec(f"{self.store.url}: not a repository this anyvirt reads "
                                  f"({str(config.get('format'))[:60]!r})")
            size = int(config["chunk_size"])
            if not 64 * 1024 <= size <= 64 * 1024 * 1024:
                raise InvalidSpec(f"{self.store.url}: chunk size {size} out of range")
            return dict(config)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidSpec(f"{self.store.url}: {CONFIG} is malformed") from None

    def _keys(self, config: dict[str, Any], secret: Secret | None) -> codec.Keys | None:
        entry = config.get("encryption")
        if entry is None:
            if secret is not None:
                raise InvalidSpec(f"{self.store.url} is not encrypted: open it without a passphrase")
            return None
        if secret is None:
            raise PassphraseNeeded(f"{self.store.url} is encrypted: pass passphrase=")
        return codec.open_encryption(entry, secret)

    # ------------------------------------------------------------ points
    def points(self, vm: VM | str | None = None) -> list[RestorePoint]:
        """The restore points, oldest first; of one VM if ``vm`` (a VM, or a name or id)."""
        out = []
        for name in self.store.files("points"):
            point_name = name.rsplit("/", 1)[-1]
            if TEMP in point_name or not points.is_id(point_name):
                continue
            try:
                point = self._load(point_name)
            except NotFound:
                continue  # pruned while listed
            except InvalidSpec as exc:
                # one damaged point must not hide the others; verify() reports it
                log.warning("skipping a damaged restore point: %s", exc)
                continue
            if vm is None or _matches(point, vm):
                out.append(point)
        return sorted(out, key=lambda p: (p.created, p.id))

    def point(self, point_id: str) -> RestorePoint:
        return self._load(points.check_id(point_id))

    def _load(self, point_name: str) -> RestorePoint:
        sealed = self.store.get(points.object_name(point_name))
        try:
            plain = self.codec.open("point", point_name, sealed)
        except codec.Damaged as exc:
            raise InvalidSpec(f"restore point {point_name} is damaged: {exc}") from None
        return points.decode(point_name, plain)

    def _index(self, point: RestorePoint, n: int) -> bytes:
        disk = point.disks[n]
        name = str(disk["index"])
        try:
            data = self.codec.open("index", name, self.store.get(name))
        except codec.Damaged as exc:
            raise InvalidSpec(f"the index of disk {n} of point {point.id} is damaged: {exc}") from None
        if hashlib.sha256(data).hexdigest() != disk["sha256"]:
            raise InvalidSpec(f"the index of disk {n} of point {point.id} does not match its sha256")
        return data

    # ------------------------------------------------------------ backup
    def backup(self, vm: VM, *, shutdown: bool = False, snapshot: bool = False,
               timeout: float | None = DEFAULT_TIMEOUT,
               on_progress: ProgressCallback | None = None) -> RestorePoint:
        """A new restore point of ``vm``, held while its disks are read. A stopped VM's
        disks are read as they are. A running one's are read as the platform froze them at
        one instant where it can (``Capability.CHANGED_BLOCKS``: libvirt's backup job);
        elsewhere a running VM is refused unless ``shutdown=True`` (stopped gracefully
        first) or ``snapshot=True`` (read as a snapshot froze it). Only chunks the
        repository lacks are written; where the platform records changed blocks, only
        those are read."""
        vm.host.gate.require(Capability.DISK_EXPORT)
        at_snapshot = consistency.prepare(vm, shutdown=shutdown, snapshot=snapshot,
                                          timeout=timeout)
        info = vm.info()
        earlier = self.points(vm)
        tracker = _tracker(vm)
        driver = vm.host.driver
        live = (driver if info.state in (PowerState.RUNNING, PowerState.PAUSED)
                and isinstance(driver, LiveBackup) and tracker is not None else None)

        def work(job: Job, source: HeldVM) -> RestorePoint:
            with leases.hold(self.store, "backup") as held, \
                    tempfile.TemporaryDirectory(prefix="anyvirt-repo-") as tmp:
                self._clean_leftovers()
                with _PointWriter(self, vm, info, earlier, held, job) as writer:
                    job.progress(0, f"reading the disks of {vm.name}")
                    if live is not None:
                        since = _marks_of(earlier[-1]) if earlier else {}
                        with live.live_disks(vm.id, since, job.span(0, 5)) as frozen_disks:
                            for frozen_disk in frozen_disks:
                                writer.marks_made(frozen_disk.id, frozen_disk.mark)
                                writer.add(frozen_disk, frozen_disk.read, frozen_disk.mark,
                                           functools.partial(_known_changes, frozen_disk),
                                           len(frozen_disks))
                            point = writer.finish()
                    else:
                        exported, _in_place = consistency.held_disks(
                            source, Path(tmp) / "export", job.span(0, 5),
                            at_snapshot=at_snapshot, what=f"a backup of {vm.name}")
                        for disk in exported:
                            span = writer.span(len(exported))
                            # the mark first: a change after it shows in the next backup's
                            # extents
                            mark = tracker.change_mark(vm.id, disk.id, span) if tracker else None
                            writer.marks_made(disk.id, mark)
                            with open_raw(disk, self.chunk_size, Path(tmp), span) as raw, \
                                    open(raw.path, "rb") as handle:
                                asked = (functools.partial(tracker.changed_extents, vm.id,
                                                           raw.id, job=span)
                                         if tracker else None)
                                writer.add(raw, functools.partial(raw.read, handle.fileno()),
                                           mark, asked, len(exported))
                        point = writer.finish()
                job.progress(100, f"restore point {point.id} written")
                return point

        if live is not None:
            result = vm.host.gate.export(vm, "back up", work, row="backup_running", wait=True,
                                         timeout=timeout, on_progress=on_progress)
        else:
            result = vm.host.gate.export(vm, "back up", work, running=at_snapshot, wait=True,
                                         timeout=timeout, on_progress=on_progress,
                                         state_hint=consistency.RUNNING_HINT)
        assert isinstance(result, RestorePoint)
        return result

    def _put_index(self, point_id: str, n: int, raw: RawDisk | LiveDisk, index: bytes,
                   held: leases.Held) -> tuple[dict[str, Any], dict[str, Any], int]:
        """Write disk ``n``'s index of a point being made; returns its manifest entry, its
        record in the point, and the bytes stored."""
        name = points.index_name(point_id, n)
        sealed = self.codec.seal("index", name, index)
        self.store.put(name, sealed, held.id)
        digest = hashlib.sha256(index).hexdigest()
        record = {"index": name, "sha256": digest, "chunk_size": self.chunk_size}
        return _manifest_disk(n, raw, index, digest), record, len(sealed)

    def _put_point(self, point: RestorePoint, held: leases.Held) -> None:
        """Make ``point`` visible: the last write of a backup, after its chunks and indexes."""
        manifests.parse(point.manifest)  # what restore will believe, checked now
        sealed = self.codec.seal("point", point.id, points.encode(point))
        self.store.put(points.object_name(point.id), sealed, held.id)

    def _unchanged(self, changed_since: Callable[[str], Sequence[tuple[int, int]] | None],
                   disk: RawDisk | LiveDisk, parent: RestorePoint,
                   n: int) -> list[bytes | None] | None:
        """Per chunk, the parent point's id where the platform says nothing changed since
        it (None: read it); or None for a full read: no usable record, a different disk, a
        parent index that does not check out."""
        if n >= len(parent.disks):
            return None
        entry, described = parent.disks[n], parent.manifest["disks"][n]
        since = entry.get("change_mark")
        if (not since or entry["chunk_size"] != self.chunk_size or described["id"] != disk.id
                or described["size_bytes"] != disk.size):
            return None
        try:
            index = self._index(parent, n)
        except (InvalidSpec, NotFound):
            return None
        changed = changed_since(str(since))
        if changed is None:
            return None
        dirty = dirty_chunks(changed, self.chunk_size, disk.size)
        ids = [index[i:i + ID_BYTES] for i in range(0, len(index), ID_BYTES)]
        if len(ids) != -(-disk.size // self.chunk_size):
            return None
        return [None if i in dirty else chunk for i, chunk in enumerate(ids)]

    def _store_disk(self, raw: RawDisk | LiveDisk, read_at: Callable[[int, int], bytes],
                    known: set[str], held: leases.Held, job: Job,
                    reuse: list[bytes | None] | None = None) -> tuple[bytes, int, int]:
        """Chunk, hash, compress and write one disk; returns its index, bytes read, bytes
        stored. Reads happen here, hashing and writing in a small pool, a few chunks ahead.
        Chunks ``reuse`` names (unchanged since the parent point) are neither read nor
        written."""
        index = bytearray()
        read = stored = 0
        total = max(raw.size, 1)
        def kept(offset: int) -> bytes | None:
            return reuse[offset // self.chunk_size] if reuse is not None else None

        def load(item: tuple[int, int, bool]) -> bytes | None:
            offset, length, data = item
            return read_at(offset, length) if data and kept(offset) is None else None

        def save(item: tuple[int, int, bool], data: bytes | None) -> tuple[bytes, int]:
            same = kept(item[0])
            if same is not None:
                return same, 0
            if data is None or _zeros(data):
                return ZERO_ID, 0
            return self._put_chunk(data, known, held)

        for (offset, length, data), (chunk_id, put) in pipeline(
                raw.chunks(self.chunk_size), load, save):
            job.check()
            held.refresh()
            read += length if data and kept(offset) is None else 0
            stored += put
            index += chunk_id
            job.progress(100.0 * (offset + length) / total,
                         f"disk {raw.id}: {streams.human(offset + length)} of "
                         f"{streams.human(raw.size)}")
        return bytes(index), read, stored

    def _put_chunk(self, data: bytes, known: set[str], held: leases.Held) -> tuple[bytes, int]:
        chunk_id = self.codec.chunk_id(data)
        name = _chunk_name(chunk_id)
        with self._known_lock:
            if name in known:
                return bytes.fromhex(chunk_id), 0
        sealed = self.codec.seal("chunk", chunk_id, data)
        self.store.put(name, sealed, held.id)
        with self._known_lock:
            known.add(name)
        return bytes.fromhex(chunk_id), len(sealed)

    def _chunk_names(self) -> set[str]:
        return {n for n in self.store.files("chunks") if TEMP not in n}

    # ------------------------------------------------------------ restore
    def restore(self, point: RestorePoint | str, to: Host, *, name: str | None = None,
                networks: Mapping[str, str] | None = None,
                timeout: float | None = DEFAULT_TIMEOUT) -> VM:
        """A new VM on ``to`` (any backend) from ``point``. The disks are written from the
        chunks as the target's import reads them (:mod:`anyvirt.repository.chunk_images`:
        no staged copy where this machine has raw views), each chunk checked against its
        name. ``networks`` maps
        networks ``to`` lacks, as in ``plan_migration``: an unmapped one is refused."""
        point = self.point(point if isinstance(point, str) else point.id)
        manifest = manifests.parse(point.manifest)
        new_name = check_name(manifest.name if name is None else name, "name")
        to.gate.check_restore(new_name, manifest.cpus, manifest.memory_mib,
                              with_images=bool(manifest.disks))
        check_target_storage(to, manifest)
        nics = nics_for(to, manifest, networks)
        job = Job(f"restoring {point.id}", timeout)
        indexes = [self._index(point, n) for n in range(len(point.disks))]
        disks = [(points.chunk_ids(index), entry.size_bytes)
                 for entry, index in zip(manifest.disks, indexes, strict=True)]
        with chunk_images.disk_images(disks, self.chunk_size, self._chunk, job) as images:
            vm = to.vms.create(spec_for(to, manifest, new_name, images.paths, nics,
                                        image_format="raw"),
                               timeout=job.remaining())
            failed = images.failed_read()
            if failed is not None:  # an import that went on past a failed read: not a copy
                vm.delete(disks=True)
                raise failed
            return vm

    def _write_disk(self, index: bytes, size: int, image: Path, job: Job) -> None:
        """Disk ``index`` into a new sparse raw file ``image``, each chunk checked."""
        chunk_images.write_disk(points.chunk_ids(index), size, self.chunk_size, self._chunk,
                                image, job)

    def _chunk(self, chunk_id: str) -> bytes:
        """A chunk's bytes, checked against its name."""
        try:
            data = self.codec.open("chunk", chunk_id, self.store.get(_chunk_name(chunk_id)))
        except codec.Damaged as exc:
            raise InvalidSpec(f"chunk {chunk_id} is damaged: {exc}") from None
        except NotFound:
            raise InvalidSpec(f"chunk {chunk_id} is missing from {self.store.url}") from None
        if self.codec.chunk_id(data) != chunk_id:
            raise InvalidSpec(f"chunk {chunk_id} does not hold the bytes its name says")
        return data

    # ------------------------------------------------------------ portable archives
    def import_archive(self, path: str | os.PathLike[str], *,
                       timeout: float | None = DEFAULT_TIMEOUT,
                       on_progress: ProgressCallback | None = None) -> RestorePoint:
        """A new point holding a portable archive's VM, checked as a restore checks it
        (see :mod:`anyvirt.repository.archives`)."""
        from anyvirt.repository import archives

        return archives.import_archive(self, path, timeout=timeout, on_progress=on_progress)

    def export_archive(self, point: RestorePoint | str, path: str | os.PathLike[str], *,
                       timeout: float | None = DEFAULT_TIMEOUT,
                       on_progress: ProgressCallback | None = None) -> Path:
        """``point`` as a portable archive at ``path``, each chunk checked on the way and
        the archive's images compared with the point's bytes."""
        from anyvirt.repository import archives

        return archives.export_archive(self, point, path, timeout=timeout,
                                       on_progress=on_progress)

    # ------------------------------------------------------------ verify
    def verify(self) -> VerifyReport:
        """Read everything: every chunk re-hashed against its name, every point's manifest
        and indexes, every chunk an index names present."""
        problems: list[str] = []
        names = self._chunk_names()
        present: set[str] = set()

        def check(name: str) -> str | None:
            try:
                self._chunk(name.rsplit("/", 1)[-1])
            except InvalidSpec as exc:
                return str(exc)
            return None

        for name, problem in pipeline(sorted(names), lambda _n: None, lambda n, _: check(n)):
            if problem:
                problems.append(problem)
            else:
                present.add(name.rsplit("/", 1)[-1])
        count = 0
        for file in sorted(self.store.files("points")):
            point_name = file.rsplit("/", 1)[-1]
            if TEMP in point_name:
                continue
            count += 1
            try:
                point = self._load(point_name)
                for n, disk in enumerate(manifests.parse(point.manifest).disks):
                    ids = points.chunk_ids(self._index(point, n))
                    if len(ids) != -(-disk.size_bytes // self.chunk_size):
                        problems.append(f"point {point_name} disk {n}: {len(ids)} chunks do not "
                                        f"describe {disk.size_bytes} bytes")
                    missing = {c for c in ids if c} - present
                    if missing:
                        problems.append(f"point {point_name} disk {n}: {len(missing)} chunks "
                                        f"missing or damaged (e.g. {sorted(missing)[0]})")
            except (InvalidSpec, NotFound) as exc:
                problems.append(str(exc))
        return VerifyReport(problems=tuple(problems), chunks=len(names), points=count)

    # ------------------------------------------------------------ prune
    def prune(self, *, keep_last: int | None = None, keep_daily: int | None = None,
              keep_weekly: int | None = None, keep_monthly: int | None = None) -> PruneReport:
        """Forget the points the ``keep_*`` rules do not keep (see
        :mod:`anyvirt.repository.retention`), then remove the chunks no point needs,
        unless a backup is in flight (then chunks stay until the next prune)."""
        rules = retention.check_rules(keep_last=keep_last, keep_daily=keep_daily,
                                      keep_weekly=keep_weekly, keep_monthly=keep_monthly)
        with leases.hold(self.store, leases.PRUNE) as held:
            self._clean_leftovers()
            every = self.points()
            keep = retention.kept(every, **rules)
            removed = [p for p in every if p.id not in keep]
            for point in removed:
                self.store.remove(points.object_name(point.id))  # first: the point is gone
                for disk in point.disks:
                    self.store.remove(str(disk["index"]))
            if leases.live_backups(self.store, besides=held.id):
                return PruneReport(removed=tuple(p.id for p in removed), kept=tuple(sorted(keep)),
                                   removed_chunks=0, freed_bytes=0, chunks_deferred=True)
            needed: set[str] = set()
            for point in self.points():  # re-read: a backup may have finished meanwhile
                for n in range(len(point.disks)):
                    needed.update(_chunk_name(c) for c in points.chunk_ids(self._index(point, n)) if c)
            chunks = {n: s for n, s in self.store.files("chunks").items() if TEMP not in n}
            gone = [n for n in chunks if n not in needed]
            for name in gone:
                self.store.remove(name)
        return PruneReport(removed=tuple(p.id for p in removed), kept=tuple(sorted(keep)),
                           removed_chunks=len(gone), freed_bytes=sum(chunks[n] for n in gone),
                           chunks_deferred=False)

    # ------------------------------------------------------------ leftovers
    def _clean_leftovers(self) -> None:
        """Remove what dead writers left: temporary names and the indexes of points never
        written. Anything of a live lease (a backup running now) is left alone."""
        live, dead_leases = leases.dead(self.store)
        for name in self.store.files("chunks") | self.store.files("points") | self.store.files("locks"):
            if TEMP in name and name.rsplit(TEMP, 1)[1] not in live:
                self.store.remove(name)
        written = {n.rsplit("/", 1)[-1] for n in self.store.files("points")}
        for name in self.store.files("indexes"):
            point_name = name.split("/")[1]
            owner = name.rsplit(TEMP, 1)[1] if TEMP in name else points.lease_of(point_name)
            if point_name not in written and owner not in live:
                self.store.remove(name)
        for name in dead_leases:
            self.store.remove(name)


class _PointWriter:
    """One backup's disks into the repository, then its point: the parts the stopped and
    the running paths share. Marks made are dropped again if the point is never written;
    the parent's marks are dropped once it is (no later backup builds on them)."""

    def __init__(self, repo: BackupRepository, vm: VM, info: Any, earlier: list[RestorePoint],
                 held: leases.Held, job: Job) -> None:
        self.repo, self.vm, self.info, self.earlier, self.held, self.job = (
            repo, vm, info, earlier, held, job)
        self.tracker = _tracker(vm)
        self.known = repo._chunk_names()
        self.created = dt.datetime.now(dt.UTC)
        self.id = points.point_id(self.created, held.id)
        self.entries: list[dict[str, Any]] = []
        self.disks: list[dict[str, Any]] = []
        self.read = self.stored = 0
        self.made: list[tuple[str, str]] = []  # (disk id, mark) no point names yet

    def span(self, count: int) -> Job:
        share = 95.0 / max(count, 1)
        n = len(self.entries)
        return self.job.span(5 + share * n, 5 + share * (n + 1))

    def marks_made(self, disk_id: str, mark: str | None) -> None:
        if mark:
            self.made.append((disk_id, mark))

    def add(self, disk: RawDisk | LiveDisk, read_at: Callable[[int, int], bytes],
            mark: str | None, changed_since: Callable[[str], Sequence[tuple[int, int]] | None]
            | None, count: int) -> None:
        """One disk: only what changed since the parent point where the platform says."""
        span = self.span(count)
        reuse = (self.repo._unchanged(changed_since, disk, self.earlier[-1], len(self.entries))
                 if changed_since is not None and self.earlier else None)
        index, got, put = self.repo._store_disk(disk, read_at, self.known, self.held, span, reuse)
        entry, record, written = self.repo._put_index(self.id, len(self.entries), disk, index,
                                                      self.held)
        self.read, self.stored = self.read + got, self.stored + put + written
        self.entries.append(entry)
        self.disks.append({**record, "change_mark": mark})

    def finish(self) -> RestorePoint:
        vm, created = self.vm, self.created
        point = RestorePoint(
            id=self.id, vm_name=vm.name, vm_id=vm.id, created=created,
            incremental=bool(self.earlier), read_bytes=self.read, stored_bytes=self.stored,
            source_backend=vm.host.backend, size_bytes=sum(e["size_bytes"] for e in self.entries),
            manifest=_manifest(vm, self.info, self.entries, created), disks=tuple(self.disks))
        self.repo._put_point(point, self.held)
        self.made = []  # named by the point now
        if self.earlier:
            # the new point's marks supersede the parent's; a backup building on the
            # parent again (the new point pruned) finds its mark gone: a full read
            parent = self.earlier[-1]
            _drop_marks(self.tracker, vm.id, sorted(_marks_of(parent).items()), self.job)
        return point

    def __enter__(self) -> _PointWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # a point never written: no point names its marks, and left behind they would only
        # cost the platform (QEMU keeps every enabled bitmap up to date)
        _drop_marks(self.tracker, self.vm.id, self.made, self.job)
        self.made = []


def _known_changes(disk: LiveDisk, _since: str) -> Sequence[tuple[int, int]] | None:
    # the platform answered for the parent's mark when it froze the disk
    return disk.changed


def _marks_of(point: RestorePoint) -> dict[str, str]:
    """A point's change marks by disk id."""
    return {str(d.get("id", "")): str(e["change_mark"])
            for d, e in zip(point.manifest.get("disks", ()), point.disks, strict=False)
            if e.get("change_mark")}


def _tracker(vm: VM) -> ChangeTracker | None:
    """The VM's driver as a change tracker, where the connection declares one."""
    driver = vm.host.driver
    if isinstance(driver, ChangeTracker) and vm.host.supports(Capability.CHANGED_BLOCKS):
        return driver
    return None


def _drop_marks(tracker: ChangeTracker | None, vm_id: str, marks: list[tuple[str, str]],
                job: Job) -> None:
    if tracker is None:
        return
    for disk_id, mark in marks:
        try:
            tracker.drop_change_mark(vm_id, disk_id, mark, job)
        except Exception as exc:  # a mark left behind costs, it never harms
            log.info("change mark %s of %s not dropped: %s", mark, disk_id, exc)


def _zeros(data: bytes) -> bool:
    # comparing with a ready buffer of zeros is a memcmp; slicing one would copy it first
    return data == _ZERO if len(data) == len(_ZERO) else data.count(0) == len(data)


def _matches(point: RestorePoint, vm: VM | str) -> bool:
    if isinstance(vm, str):
        return vm in (point.vm_id, point.vm_name)
    return point.vm_id == vm.id


def _chunk_name(chunk_id: str) -> str:
    return f"chunks/{chunk_id[:2]}/{chunk_id}"


def _manifest_disk(n: int, raw: RawDisk | LiveDisk, index: bytes, digest: str) -> dict[str, Any]:
    # the archive's disk entry: here the "file" is the disk's index, and its sha256 pins
    # every chunk (each chunk is named by the hash of its bytes)
    return {"id": raw.id, "file": f"disks/{n}-index.raw", "format": "raw",
            "size_bytes": raw.size, "bus": raw.bus, "file_bytes": len(index), "sha256": digest,
            "compressed": False}


def _manifest(vm: VM, info: Any, disks: list[dict[str, Any]], created: dt.datetime) -> dict[str, Any]:
    """The portable archive's manifest (format 2) for this VM."""
    from anyvirt import __version__

    return {
        "format": manifests.FORMAT_V2,
        "anyvirt_version": __version__,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {"backend": vm.host.backend, "uri": vm.host.uri,
                   "raw": {"state": info.raw_state,
                           "extra": json.loads(json.dumps(info.extra, default=str))}},
        "snapshots": {"mode": "flattened",
                      "note": "the current state only; the snapshot tree is not carried"},
        "vm": {"name": info.name, "cpus": info.cpus, "memory_mib": info.memory_mib,
               "firmware": info.firmware.value, "guest_os": info.guest_os,
               "description": info.description,
               "nics": [{"id": n.id, "network": n.network, "model": n.model, "mac": n.mac}
                        for n in info.nics]},
        "disks": disks,
    }


__all__ = ["BackupRepository", "PassphraseNeeded", "PruneReport", "VerifyReport"]
