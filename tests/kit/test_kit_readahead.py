"""Read-ahead: the same bytes in the same order, errors raised on the reading side."""

from __future__ import annotations

import io
import os

import pytest

from anyvirt.kit.readahead import read_ahead


def test_it_returns_the_same_bytes_whatever_the_read_sizes() -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    with read_ahead(io.BytesIO(data), chunk=65536) as reader:
        got = bytearray()
        for size in (1, 100, 65536, 200000, -1):
            got += reader.read(size)
        while chunk := reader.read(1 << 20):
            got += chunk
    assert bytes(got) == data
    assert reader.read(10) == b""


def test_a_failing_source_fails_the_reader() -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1, /) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("disk gone")
            return b"x" * size

    with read_ahead(Broken(), chunk=4) as reader:
        assert reader.read(8) == b"xxxx"
        assert reader.read(8) == b"xxxx"
        with pytest.raises(OSError, match="disk gone"):
            reader.read(8)
