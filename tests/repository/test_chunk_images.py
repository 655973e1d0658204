"""A restore point's disk read as ranges of its chunks (pure logic, no server): ranges across
chunk edges, zero chunks that cost nothing, where the zeros are, and each chunk decoded once
for readers a few chunks apart (as qemu-img reads: 8 requests at once)."""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from anyvirt import InvalidSpec
from anyvirt.repository.chunk_images import CACHED, ChunkedDisk

CHUNK = 64 * 1024


def disk(ids: list[str | None], size: int, pool: ThreadPoolExecutor,
         fetched: collections.Counter[int]) -> tuple[ChunkedDisk, bytes]:
    """A disk whose chunk n holds the byte n+1 throughout; its expected bytes."""
    lock = threading.Lock()

    def fetch(n: int) -> bytes:
        with lock:
            fetched[n] += 1
        return bytes([n + 1]) * min(CHUNK, size - n * CHUNK)

    expected = b"".join(bytes(min(CHUNK, size - n * CHUNK)) if c is None
                        else bytes([n + 1]) * min(CHUNK, size - n * CHUNK)
                        for n, c in enumerate(ids))
    return ChunkedDisk(ids, size, CHUNK, fetch, pool), expected


def test_ranges_across_chunks_and_zero_chunks() -> None:
    ids: list[str | None] = ["a", None, "c", "d", None]
    size = 4 * CHUNK + 100  # a short last chunk
    fetched: collections.Counter[int] = collections.Counter()
    with ThreadPoolExecutor(2) as pool:
        chunked, expected = disk(ids, size, pool, fetched)
        for offset, length in ((0, size), (CHUNK - 10, 20), (CHUNK + 5, 3 * CHUNK - 5),
                               (size - 50, 50), (2 * CHUNK, CHUNK)):
            assert chunked.read_at(offset, length) == expected[offset:offset + length]
        assert chunked.status(0, size) == [(CHUNK, False), (CHUNK, True), (2 * CHUNK, False),
                                           (100, True)]
        assert chunked.status(CHUNK + 7, 10) == [(10, True)]
        with pytest.raises(InvalidSpec):
            chunked.read_at(size - 1, 2)
    assert set(fetched) == {0, 2, 3}  # zero chunks are never fetched


def test_an_index_that_does_not_describe_the_disk_is_refused() -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(InvalidSpec, match="does not describe"):
        ChunkedDisk(["a", "b"], 3 * CHUNK, CHUNK, lambda n: b"", pool)


def test_readers_a_few_chunks_apart_decode_each_chunk_once() -> None:
    count = 200
    ids: list[str | None] = [str(n) for n in range(count)]
    fetched: collections.Counter[int] = collections.Counter()
    with ThreadPoolExecutor(2) as pool:
        chunked, expected = disk(ids, count * CHUNK, pool, fetched)
        # eight requests of two chunks in flight, answered in a shuffled order
        step, window = 2 * CHUNK, 8
        for start in range(0, count * CHUNK, step * window):
            for k in (3, 0, 7, 1, 5, 2, 6, 4):
                offset = start + k * step
                if offset < count * CHUNK:
                    assert chunked.read_at(offset, step) == expected[offset:offset + step]
    assert set(fetched) == set(range(count))
    assert max(fetched.values()) == 1
    assert 2 * window <= CACHED  # what the reads above need kept
