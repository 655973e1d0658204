"""The digest a move takes on the way out, fed from the source's side of a stream (a served
view's export) when no reader of the view feeds it: who owns a pass, and when it counts."""

from __future__ import annotations

import hashlib

from anyvirt.kit import extent_digest

MIB = 1024 * 1024


def test_a_claimed_pass_is_taken_when_the_copy_is_done() -> None:
    tap = extent_digest.OutboundDigest(4 * MIB)
    probe = tap.claim()
    assert probe is not None
    tap.add(0, b"\1" * 512, within=probe)  # a probe of the header
    copy = tap.claim()  # the import starts again at the first byte
    assert copy is not None and copy != probe
    data = b"\2" * MIB
    tap.add(0, data, within=copy)
    tap.add(0, b"\3" * 512, within=probe)  # the probe's pass no longer counts
    tap.end()
    assert tap.taken is not None
    assert tap.taken.ranges == ((0, MIB),)
    assert tap.taken.digest.sha256 == hashlib.sha256(data).hexdigest()
    assert tap.claim() is None, "a later probe of the source is no copy"
    tap.end()
    assert tap.taken.digest.sha256 == hashlib.sha256(data).hexdigest()


def test_a_reader_that_feeds_the_digest_takes_it_over() -> None:
    tap = extent_digest.OutboundDigest(4 * MIB)
    below = tap.claim()
    assert below is not None
    tap.add(0, b"\1" * 512, within=below)
    tap.begin()  # the reader's own pass (an encoder reading the view)
    assert tap.claim() is None
    data = b"\2" * MIB
    tap.add(0, data)
    tap.add(0, data, within=below)  # the same bytes again from below: not counted twice
    tap.end()
    assert tap.taken is not None
    assert tap.taken.digest.sha256 == hashlib.sha256(data).hexdigest()


def test_a_claimed_pass_read_out_of_order_keeps_nothing() -> None:
    tap = extent_digest.OutboundDigest(4 * MIB)
    mine = tap.claim()
    tap.add(MIB, b"\1" * MIB, within=mine)
    tap.add(0, b"\2" * MIB, within=mine)
    tap.end()
    assert tap.taken is None
