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


class Pushed(Ranged):
    """A window its server sends whole, aborted or not (a libvirt stream): what an abort
    leaves unread was on the wire for nothing."""

    wasted = 0

    def abort(self) -> None:
        Pushed.wasted += len(self.left)
        super().abort()


def pushed_reader(opened: list[tuple[int, int]], **kwargs: int) -> WindowedReader:
    Pushed.wasted = 0

    def open_window(offset: int, length: int) -> Pushed:
        opened.append((offset, length))
        return Pushed(offset, length)
    return WindowedReader(open_window, len(DATA), "test data", **kwargs)


def test_reads_out_of_order_inside_a_window_waste_none_of_it() -> None:
    """Two reads in flight arrive swapped now and then (the chunk after next first): the
    window is read through to the later one and the skipped bytes serve the earlier one,
    where an abort threw away the rest of the window the server had sent."""
    opened: list[tuple[int, int]] = []
    source = pushed_reader(opened, read_through=256 * 1024)
    step = 64 * 1024
    order = [0, 1, 3, 2, 4, 5, 7, 6, 8, 9, 10, 11, 12, 13, 15, 14]
    for index in order:
        assert source.read_at(index * step, step) == DATA[index * step:(index + 1) * step]
    assert Pushed.wasted == 0
    assert sum(length for _offset, length in opened) == len(DATA)  # every byte once
    assert source.read_bytes == len(DATA)


def test_without_reading_through_a_swapped_read_aborts_the_window() -> None:
    """The same reads with ``read_through`` 0 (the default): the window is cut."""
    opened: list[tuple[int, int]] = []
    source = pushed_reader(opened)
    step = 64 * 1024
    for index in [0, 1, 3, 2]:
        assert source.read_at(index * step, step) == DATA[index * step:(index + 1) * step]
    assert Pushed.wasted == step


def test_a_seek_past_what_may_be_read_through_still_aborts() -> None:
    opened: list[tuple[int, int]] = []
    source = pushed_reader(opened, read_through=4096)
    assert source.read_at(0, 4096) == DATA[:4096]
    assert source.read_at(4096, 4096) == DATA[4096:8192]  # a window of 8 KiB from here
    assert source.read_at(12288, 100) == DATA[12288:12388]  # 4 KiB skipped: read through
    assert Pushed.wasted == 0
    assert opened[-1] == (12288, 16384)  # running on: doubled
    assert source.read_at(8192, 4096) == DATA[8192:12288]  # what was skipped, from memory
    assert source.read_at(12388 + 8192, 10) == DATA[20580:20590]  # 8 KiB on: the window is cut
    assert Pushed.wasted == 16384 - 100
    assert opened[-1] == (20580, 10)


def test_a_read_that_widens_the_last_one_goes_on_with_its_window() -> None:
    """A read starting inside the last one and running past it (a reader widening a
    small read): the known part from memory, the rest from the open window."""
    opened: list[tuple[int, int]] = []
    source = pushed_reader(opened, read_through=64 * 1024)
    assert source.read_at(0, 4096) == DATA[:4096]
    assert source.read_at(4096, 4096) == DATA[4096:8192]  # window 4096..12288
    assert source.read_at(4096, 16384) == DATA[4096:20480]
    assert Pushed.wasted == 0
    assert opened == [(0, 4096), (4096, 8192), (12288, 16384)]


def test_small_reads_asked_again_come_from_memory() -> None:
    """An image's tables read by one reader (a chain's map) and again by another (the
    view's decoder), with data reads between: once on the wire, up to ``remember``."""
    opened: list[tuple[int, int]] = []
    source = pushed_reader(opened, remember=8192)
    tables = [(0, 512), (65536, 4096), (131072, 4096)]
    for offset, length in tables:
        assert source.read_at(offset, length) == DATA[offset:offset + length]
    assert source.read_at(262144, 131072) == DATA[262144:393216]  # data: not remembered
    first = len(opened)
    for offset, length in tables[1:]:  # the most recent 8 KiB of them
        assert source.read_at(offset, length) == DATA[offset:offset + length]
    assert source.read_at(65536 + 100, 50) == DATA[65636:65686]  # inside one
    assert len(opened) == first
    assert source.read_at(0, 512) == DATA[:512]  # dropped: 8 KiB held, the oldest went
    assert len(opened) == first + 1


class Packets(Ranged):
    """A window that delivers in packets of 1000 bytes, straight into the reader's buffer
    (as a libvirt stream does); its ``read`` is not to be used."""

    def read(self, size: int, /) -> bytes:
        raise AssertionError("a window that receives into a buffer is read into")

    def readinto(self, buffer: memoryview, /) -> int:
        got = min(len(buffer), len(self.left), 1000)
        buffer[:got] = self.left[:got]
        self.left = self.left[got:]
        return got


def test_a_window_that_receives_into_a_buffer_fills_the_answer_in_place() -> None:
    opened: list[tuple[int, int]] = []

    def open_window(offset: int, length: int) -> Packets:
        opened.append((offset, length))
        return Packets(offset, length)
    source = WindowedReader(open_window, len(DATA), "test data", read_through=64 * 1024,
                            remember=64 * 1024)
    assert source.read_at(0, 4096) == DATA[:4096]  # five packets, in place
    assert source.read_at(4096, 10_000) == DATA[4096:14096]
    assert source.read_at(20_000, 100) == DATA[20_000:20_100]  # a seek read through
    assert source.read_at(14096, 5904) == DATA[14096:20_000]  # the gap, kept
    assert source.read_at(2000, 3000) == DATA[2000:5000]  # in memory and on
    assert source.read_bytes == 4096 + 10_000 + 100 + 5904 + 3000
    source.close()
