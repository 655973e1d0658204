"""A chain's decoder reads its layers roughly, not exactly, in guest order: the bytes it
gets are put back in order (:class:`anyvirt.kit.extent_digest.InOrder`) before they
feed a move's digest, and any doubt (a gap never filled, too much held back, a read
again that differs) spoils the pass rather than let the digest say something wrong."""

from __future__ import annotations

import hashlib

from anyvirt.kit import extent_digest

KIB = 1024
MIB = 1024 * KIB


class Fed:
    """What an :class:`InOrder` handed on, in the order it did."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []

    def __call__(self, offset: int, data: bytes) -> None:
        self.got.append((offset, data))

    @property
    def joined(self) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for offset, data in self.got:
            if out and out[-1][0] + len(out[-1][1]) == offset:
                out[-1] = (out[-1][0], out[-1][1] + data)
            else:
                out.append((offset, data))
        return out


def blocks(byte: int, length: int) -> bytes:
    return bytes([byte]) * length


def test_reads_in_order_are_handed_on_as_they_come() -> None:
    fed = Fed()
    feed = extent_digest.InOrder([(0, 128 * KIB), (MIB, 64 * KIB)], fed)
    feed.put(0, blocks(1, 64 * KIB))
    feed.put(64 * KIB, blocks(2, 64 * KIB))
    assert not feed.complete()
    feed.put(MIB, blocks(3, 64 * KIB))
    assert feed.complete()
    assert fed.joined == [(0, blocks(1, 64 * KIB) + blocks(2, 64 * KIB)),
                          (MIB, blocks(3, 64 * KIB))]


def test_swapped_reads_wait_for_the_one_before() -> None:
    fed = Fed()
    feed = extent_digest.InOrder([(0, 192 * KIB)], fed)
    feed.put(128 * KIB, blocks(3, 64 * KIB))
    feed.put(64 * KIB, blocks(2, 64 * KIB))
    assert fed.got == [], "nothing is handed on before the first byte"
    feed.put(0, blocks(1, 64 * KIB))
    assert feed.complete()
    assert fed.joined == [(0, blocks(1, 64 * KIB) + blocks(2, 64 * KIB) + blocks(3, 64 * KIB))]


def test_a_gap_never_filled_is_no_complete_pass() -> None:
    fed = Fed()
    feed = extent_digest.InOrder([(0, 192 * KIB)], fed)
    feed.put(0, blocks(1, 64 * KIB))
    feed.put(128 * KIB, blocks(3, 64 * KIB))
    assert not feed.complete()
    assert fed.joined == [(0, blocks(1, 64 * KIB))]


def test_too_much_held_back_spoils_the_pass() -> None:
    fed = Fed()
    feed = extent_digest.InOrder([(0, 4 * MIB)], fed, limit=MIB)
    for offset in range(MIB, 4 * MIB, 512 * KIB):  # all but the first MiB, waiting for it
        feed.put(offset, blocks(2, 512 * KIB))
    assert feed.spoiled
    feed.put(0, blocks(1, MIB))
    assert not feed.complete()
    assert fed.got == []


def test_a_read_again_is_compared_with_what_was_handed_on() -> None:
    fed = Fed()
    feed = extent_digest.InOrder([(0, 128 * KIB)], fed)
    feed.put(0, blocks(1, 64 * KIB))
    feed.put(32 * KIB, blocks(1, 64 * KIB))  # half again, half new: the same bytes
    assert not feed.spoiled
    feed.put(96 * KIB, blocks(1, 32 * KIB))
    assert feed.complete()
    assert fed.joined == [(0, blocks(1, 128 * KIB))]

    differs = extent_digest.InOrder([(0, 128 * KIB)], Fed())
    differs.put(0, blocks(1, 64 * KIB))
    differs.put(0, blocks(9, 64 * KIB))
    assert differs.spoiled and not differs.complete()


def test_a_read_again_no_longer_kept_spoils_the_pass() -> None:
    feed = extent_digest.InOrder([(0, 4 * MIB)], Fed(), keep=MIB)
    for offset in range(0, 3 * MIB, MIB):
        feed.put(offset, blocks(1, MIB))
    feed.put(0, blocks(1, 64 * KIB))  # same bytes, but long forgotten: cannot be proven
    assert feed.spoiled


def test_reads_outside_the_data_hand_on_nothing() -> None:
    fed = Fed()
    feed = extent_digest.InOrder([(64 * KIB, 64 * KIB)], fed)
    feed.put(0, blocks(7, 192 * KIB))  # a read across the data: only the data counts
    assert feed.complete()
    assert fed.joined == [(64 * KIB, blocks(7, 64 * KIB))]


def test_a_digest_pass_with_an_unmet_requirement_is_not_taken() -> None:
    tap = extent_digest.OutboundDigest(4 * MIB)
    mine = tap.claim()
    assert mine is not None
    feed = extent_digest.InOrder([(0, 2 * MIB)], lambda at, data: tap.add(at, data, within=mine))
    tap.require(mine, feed.complete)
    feed.put(0, blocks(1, MIB))  # the second MiB never came
    tap.end()
    assert tap.taken is None

    tap = extent_digest.OutboundDigest(4 * MIB)
    mine = tap.claim()
    assert mine is not None
    feed = extent_digest.InOrder([(0, 2 * MIB)], lambda at, data: tap.add(at, data, within=mine))
    tap.require(mine, feed.complete)
    feed.put(MIB, blocks(2, MIB))
    feed.put(0, blocks(1, MIB))
    tap.end()
    assert tap.taken is not None
    assert tap.taken.digest.sha256 == hashlib.sha256(blocks(1, MIB) + blocks(2, MIB)).hexdigest()

