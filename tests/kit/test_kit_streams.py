"""Chunked streaming: exact length or a typed error, sha256 on the way, holes kept, progress."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from anyvirt.errors import Cancelled, InvalidSpec, TaskFailed
from anyvirt.kit import streams
from anyvirt.tasks import Job

MIB = 1024 * 1024


class Source(io.RawIOBase):
    """A reader that records how much each read asked for (memory stays bounded)."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)
        self.asked: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.asked.append(-1 if size is None else size)
        return self.inner.read(size)


def test_exact_copy_gives_count_and_sha256() -> None:
    data = os.urandom(3 * MIB + 17)
    source, out = Source(data), io.BytesIO()
    result = streams.copy(source, out, size=len(data), chunk_size=MIB)
    assert out.getvalue() == data
    assert result.bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert max(source.asked) <= MIB and -1 not in source.asked


def test_short_stream_is_an_error_never_padded() -> None:
    with pytest.raises(TaskFailed, match="ended after 100 of the declared 200"):
        streams.copy(io.BytesIO(b"x" * 100), io.BytesIO(), size=200)


def test_long_stream_is_an_error_never_cut() -> None:
    with pytest.raises(InvalidSpec, match="longer than the declared 100"):
        streams.copy(io.BytesIO(b"x" * 101), io.BytesIO(), size=100, error=InvalidSpec)


def test_corrupted_stream_fails_the_checksum() -> None:
    data = bytearray(os.urandom(4096))
    expected = hashlib.sha256(data).hexdigest()
    data[1000] ^= 1
    with pytest.raises(TaskFailed, match="sha256"):
        streams.copy(io.BytesIO(bytes(data)), io.BytesIO(), size=len(data), expected_sha256=expected)


def test_unknown_size_copies_everything() -> None:
    result = streams.copy(io.BytesIO(b"abc" * 1000), io.BytesIO(), size=None)
    assert result.bytes == 3000


def test_zero_chunks_become_holes_in_a_file(tmp_path: Path) -> None:
    data = b"\0" * (8 * MIB) + b"data" * 1024 + b"\0" * (8 * MIB)
    out = tmp_path / "disk.raw"
    result = streams.copy_to_file(io.BytesIO(data), out, size=len(data))
    assert out.read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert out.stat().st_blocks * 512 < 2 * MIB  # the 16 MiB of zeros were not written


def test_failed_copy_removes_the_partial_file_and_keeps_others(tmp_path: Path) -> None:
    out = tmp_path / "disk.raw"
    with pytest.raises(TaskFailed):
        streams.copy_to_file(io.BytesIO(b"x" * 10), out, size=20)
    assert not out.exists()
    out.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        streams.copy_to_file(io.BytesIO(b"x"), out, size=1)
    assert out.read_bytes() == b"someone else's"


def test_progress_and_cancel_go_through_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "PROGRESS_EVERY", 0.0)
    seen: list[tuple[float | None, str]] = []
    job = Job("copy", 60, lambda pct, msg: seen.append((pct, msg)))
    streams.copy(io.BytesIO(bytes(4 * MIB)), io.BytesIO(), size=4 * MIB, job=job, what="disk0",
                 span=(50.0, 100.0), chunk_size=MIB)
    percents = [p for p, _ in seen]
    assert percents[0] == pytest.approx(62.5) and percents[-1] == 100.0
    assert "disk0: 4.0 MiB of 4.0 MiB" in seen[-1][1] and "/s" in seen[-1][1]
    job.request_cancel()
    with pytest.raises(Cancelled):
        streams.copy(io.BytesIO(bytes(MIB)), io.BytesIO(), size=MIB, job=job)


def test_metered_reader_for_pulling_consumers() -> None:
    data = os.urandom(100_000)
    reader = streams.MeteredReader(io.BytesIO(data), len(data))
    pulled = b"".join(iter(lambda: reader.read(8192), b""))
    assert pulled == data
    assert reader.transfer is not None and reader.transfer.sha256 == hashlib.sha256(data).hexdigest()
    short = streams.MeteredReader(io.BytesIO(data[:10]), 20)
    assert short.read(8) == data[:8]
    assert short.read(8) == data[8:10]
    with pytest.raises(TaskFailed, match="ended after 10 of the declared 20"):
        short.read(8)
    long = streams.MeteredReader(io.BytesIO(data[:30]), 20)
    assert long.read(8) == data[:8]
    with pytest.raises(TaskFailed, match="longer"):  # before the last declared byte goes out
        long.read(100)


def test_a_stream_metered_unhashed_is_counted_and_still_refused_when_short() -> None:
    import io

    import pytest

    from anyvirt.errors import TaskFailed
    from anyvirt.kit.streams import MeteredReader

    body = MeteredReader(io.BytesIO(b"x" * 10), 10, hashed=False)
    assert body.read(-1) == b"x" * 10 and body.read(-1) == b""
    assert body.transfer is not None and (body.transfer.bytes, body.transfer.sha256) == (10, "")
    short = MeteredReader(io.BytesIO(b"x" * 9), 10, hashed=False)
    short.read(-1)
    with pytest.raises(TaskFailed, match="ended after 9"):
        short.read(-1)
