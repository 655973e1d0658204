"""WindowedReader's windows: pure logic over an in-memory source of ranged reads."""

from __future__ import annotations

from anyvirt.kit.windowed_reads import WindowedReader

DATA = bytes(range(256)) * 4096  # 1 MiB


class Ranged:
    """One ranged read of ``DATA`` (a Window)."""

    def __init__(self, offset: int, length: int) -> None:
        self.left = DATA[offset:offset + length]

    def read(self, size: int, /) -> bytes:
        out, self.left = self.left[:size], self.left[size:]
        return out

    def finish(self) -> None:
        assert not self.left

    def abort(self) -> None:
        self.left = b""


def reader(opened: list[tuple[int, int]], **kwargs: int) -> WindowedReader:
    def open_window(offset: int, length: int) -> Ranged:
        opened.append((offset, length))
        return Ranged(offset, length)
    return WindowedReader(open_window, len(DATA), "test data", **kwargs)


def test_without_a_minimum_a_seek_opens_exactly_the_read() -> None:
    opened: list[tuple[int, int]] = []
    source = reader(opened)
    assert source.read_at(1000, 10) == DATA[1000:1010]
    assert source.read_at(5000, 10) == DATA[5000:5010]
    assert opened == [(1000, 10), (5000, 10)]


def test_a_minimum_window_serves_reads_after_a_seek_from_one_window() -> None:
    opened: list[tuple[int, int]] = []
    source = reader(opened, min_window=64 * 1024)
    for at in range(0, 64 * 1024, 4096):  # sixteen reads, one window
        assert source.read_at(at, 4096) == DATA[at:at + 4096]
    assert opened == [(0, 64 * 1024)]
    assert source.read_at(len(DATA) - 100, 100) == DATA[-100:]  # clipped at the end
    assert opened[-1] == (len(DATA) - 100, 100)
    source.close()


def test_a_sequential_run_doubles_from_the_minimum_window() -> None:
    opened: list[tuple[int, int]] = []
    source = reader(opened, min_window=64 * 1024, max_window=256 * 1024)
    for at in range(0, 768 * 1024, 4096):
        assert source.read_at(at, 4096) == DATA[at:at + 4096]
    assert [length for _offset, length in opened] == [64 * 1024, 128 * 1024, 256 * 1024,
                                                      256 * 1024, 256 * 1024]


def test_a_read_of_what_was_just_read_opens_no_window() -> None:
    opened: list[tuple[int, int]] = []
    source = reader(opened, min_window=64 * 1024)
    assert source.read_at(4096, 8192) == DATA[4096:12288]
    assert source.read_at(4096, 8192) == DATA[4096:12288]  # again
    assert source.read_at(8192, 100) == DATA[8192:8292]  # inside it
    assert source.read_at(12288, 4096) == DATA[12288:16384]  # on from where the window is
    assert opened == [(4096, 64 * 1024)]
    assert source.read_bytes == 8192 * 2 + 100 + 4096
