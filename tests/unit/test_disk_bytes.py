"""anyvirt.testing.disk_bytes.pattern: the disk contents the backup, restore and move tests write."""

from __future__ import annotations

import zlib

from anyvirt.testing.disk_bytes import pattern

MIB = 1024 * 1024


def test_pattern_is_reproducible_and_exactly_the_size_asked() -> None:
    assert pattern(7, MIB) == pattern(7, MIB)
    assert [len(pattern(3, size)) for size in (0, 1, 4095, MIB + 1)] == [0, 1, 4095, MIB + 1]
    assert pattern(7, 4096) != pattern(8, 4096)


def test_pattern_compresses_but_not_to_nothing() -> None:
    # neither random (a repository would store it whole) nor a run of one byte (it would vanish);
    # zlib keeps about a fifth of it
    ratio = len(zlib.compress(pattern(1, MIB))) / MIB
    assert 0.05 < ratio < 0.9
