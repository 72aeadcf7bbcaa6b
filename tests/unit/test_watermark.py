"""Commit watermarks: out-of-order finishes commit only up to the lowest unfinished offset."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disrouter.actors.watermark import PartitionWatermark, Watermarks


def commit(part: PartitionWatermark) -> int | None:
    """What the worker does: take the committable offset and mark it committed."""
    offset = part.committable()
    if offset is not None:
        part.mark_committed(offset)
    return offset


def test_nothing_committable_before_anything_finishes():
    part = PartitionWatermark()
    assert part.committable() is None
    part.start(10)
    part.start(11)
    assert part.committable() is None
    assert part.in_flight == 2


def test_in_order_finish_commits_the_next_offset():
    part = PartitionWatermark()
    part.start(10)
    part.finish(10)
    # Kafka semantics: the committed offset is the next one to read
    assert part.committable() == 11
    assert part.in_flight == 0


def test_out_of_order_finishes_wait_for_the_lowest_unfinished():
    part = PartitionWatermark()
    for offset in (10, 11, 12, 13):
        part.start(offset)
    part.finish(12)
    part.finish(13)
    assert part.committable() is None  # 10 and 11 are still running
    assert part.in_flight == 2
    part.finish(11)
    assert part.committable() is None  # 10 still running
    part.finish(10)
    assert part.committable() == 14  # everything up to 13 is done
    assert part.in_flight == 0


def test_watermark_moves_partially():
    part = PartitionWatermark()
    for offset in range(5):
        part.start(offset)
    part.finish(0)
    part.finish(1)
    part.finish(3)
    assert part.committable() == 2  # 2 is unfinished: 3 must not be covered
    part.finish(2)
    assert part.committable() == 4  # 4 unfinished
    part.finish(4)
    assert part.committable() == 5


def test_offsets_may_have_gaps():
    # compacted topics and transaction markers leave gaps between delivered offsets
    part = PartitionWatermark()
    for offset in (3, 7, 20):
        part.start(offset)
    part.finish(7)
    assert part.committable() is None
    part.finish(3)
    assert part.committable() == 8
    part.finish(20)
    assert part.committable() == 21


def test_nothing_committable_twice():
    part = PartitionWatermark()
    part.start(0)
    part.start(1)
    part.finish(0)
    assert commit(part) == 1
    assert part.committable() is None  # already handed to Kafka
    assert commit(part) is None
    part.finish(1)
    assert commit(part) == 2
    assert part.committable() is None


def test_a_failed_commit_stays_committable():
    # the worker only marks committed after Kafka accepted the commit
    part = PartitionWatermark()
    part.start(0)
    part.finish(0)
    assert part.committable() == 1
    assert part.committable() == 1  # asking twice without marking does not consume it


def test_finishing_an_offset_twice_or_one_never_started_is_an_error():
    part = PartitionWatermark()
    part.start(5)
    part.start(6)
    part.finish(6)
    with pytest.raises(ValueError, match="not in flight"):
        part.finish(6)  # done, still pending behind 5
    with pytest.raises(ValueError, match="not in flight"):
        part.finish(4)  # below everything pending
    part.finish(5)
    with pytest.raises(ValueError, match="not in flight"):
        part.finish(5)  # already below the watermark
    assert part.committable() == 7


def test_starting_out_of_order_is_an_error():
    part = PartitionWatermark()
    part.start(5)
    with pytest.raises(ValueError, match="out of order"):
        part.start(5)
    with pytest.raises(ValueError, match="out of order"):
        part.start(4)
    part.finish(5)
    with pytest.raises(ValueError, match="below the watermark"):
        part.start(3)
    part.start(6)  # the next offset is fine
    assert part.in_flight == 1


# --- many partitions ---------------------------------------------------------------------------


def test_partitions_are_independent():
    marks = Watermarks()
    a = marks.start("t:0", 100)
    b = marks.start("t:1", 7)
    marks.start("t:0", 101)
    assert marks.in_flight == 3
    b.finish(7)
    assert marks.committable() == {"t:1": 8}
    a.finish(101)
    assert marks.committable() == {"t:1": 8}  # t:0 still waits for 100
    marks.mark_committed({"t:1": 8})
    assert marks.committable() == {}
    a.finish(100)
    assert marks.committable() == {"t:0": 102}
    assert marks.in_flight == 0


def test_start_returns_the_same_tracker_for_a_partition():
    marks = Watermarks()
    assert marks.start("t:0", 1) is marks.start("t:0", 2)
    assert marks.start("t:0", 3) is not marks.start("t:1", 3)


def test_revoked_partition_late_finisher_is_harmless():
    marks = Watermarks()
    old = marks.start("t:0", 10)
    old.start(11)
    old.finish(10)
    assert marks.committable() == {"t:0": 11}
    marks.drop(["t:0"])  # revoked: another replica (or a new assignment) takes over
    assert marks.committable() == {}
    assert marks.in_flight == 0

    # re-assigned: Kafka re-delivers from the committed offset, 11 onwards
    new = marks.start("t:0", 11)
    assert new is not old
    old.finish(11)  # the late finisher of the revoked assignment
    assert marks.committable() == {}  # it must not make the new tracker commit 12
    assert new.in_flight == 1
    new.finish(11)
    assert marks.committable() == {"t:0": 12}


def test_mark_committed_for_a_dropped_partition_is_ignored():
    marks = Watermarks()
    marks.start("t:0", 0).finish(0)
    offsets = marks.committable()
    marks.drop(["t:0"])
    marks.mark_committed(offsets)  # the commit raced the revoke: nothing to update
    assert marks.committable() == {}


def test_drop_of_unknown_partitions_is_fine():
    marks = Watermarks()
    marks.drop(["nope"])
    assert marks.committable() == {}


# --- property ----------------------------------------------------------------------------------


@st.composite
def offsets_and_order(draw):
    first = draw(st.integers(min_value=0, max_value=10_000))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=0, max_size=40))
    offsets = [first]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    order = draw(st.permutations(offsets))
    # interleave commits at random points
    commit_after = draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    return offsets, order, commit_after


@settings(max_examples=200, deadline=None)
@given(offsets_and_order())
def test_committed_offset_never_passes_an_unfinished_one(case):
    offsets, order, commit_after = case
    part = PartitionWatermark()
    for offset in offsets:
        part.start(offset)
    finished: set[int] = set()
    committed: list[int] = []
    for offset, do_commit in zip(order, commit_after):
        part.finish(offset)
        finished.add(offset)
        unfinished = [o for o in offsets if o not in finished]
        candidate = part.committable()
        # the reference: one past the last offset of the finished prefix of the partition
        prefix = []
        for o in offsets:
            if o not in finished:
                break
            prefix.append(o)
        expected = prefix[-1] + 1 if prefix else None
        if committed and expected == committed[-1]:
            expected = None  # already handed to Kafka: nothing new
        assert candidate == expected
        if candidate is not None:
            # every offset below the commit point is finished
            assert all(o >= candidate for o in unfinished)
        if do_commit and candidate is not None:
            assert not committed or candidate > committed[-1]  # strictly forward, never twice
            part.mark_committed(candidate)
            committed.append(candidate)
            assert part.committable() is None
        assert part.in_flight == len(unfinished)
    final = part.committable()
    assert (final if final is not None else committed[-1]) == offsets[-1] + 1
    assert part.in_flight == 0


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=30),
    st.lists(st.integers(min_value=0, max_value=2**16), min_size=60, max_size=60),
)
def test_interleaved_starts_and_finishes_keep_the_watermark_safe(total, script):
    """Kafka keeps delivering while earlier queries run: starts and finishes interleave.

    `script` drives the interleaving: bit 0 picks start-or-finish, bit 1 commit-or-not, the
    rest which running offset finishes.
    """
    part = PartitionWatermark()
    started: list[int] = []
    finished: set[int] = set()
    committed = None
    step = 0
    while len(finished) < total:
        choice = script[step % len(script)] + step  # never stalls on a constant script
        step += 1
        running = [o for o in started if o not in finished]
        if len(started) < total and (not running or choice & 1):
            started.append(len(started))
            part.start(started[-1])
        else:
            offset = running[(choice >> 2) % len(running)]
            part.finish(offset)
            finished.add(offset)
        offset = part.committable()
        if offset is not None:
            assert offset != committed
            # never past a started-but-unfinished offset, never past what was started
            assert all(o >= offset for o in started if o not in finished)
            assert offset <= len(started)
            if choice & 2:
                part.mark_committed(offset)
                committed = offset
    assert (part.committable() or committed) == total


# --- rebalances: a tracker detached on revoke, re-attached when its partition comes back -------


def test_next_offset_is_after_the_last_started_even_when_unfinished():
    part = PartitionWatermark()
    assert part.next_offset is None
    for offset in (10, 11, 12):
        part.start(offset)
    part.finish(10)
    assert part.next_offset == 13  # 11 and 12 are in flight: resuming must not read them again


def test_owns_commit_only_while_nobody_else_committed():
    part = PartitionWatermark()
    part.start(5)
    # Never committed: the group's offset is still where reading started (or none at all).
    assert part.owns_commit(None) and part.owns_commit(5) and not part.owns_commit(9)
    part.finish(5)
    assert commit(part) == 6
    assert part.owns_commit(6) and not part.owns_commit(5) and not part.owns_commit(None)


def test_detach_and_attach_keep_the_tracker():
    marks = Watermarks()
    tp = ("t", 0)
    part = marks.start(tp, 1)
    assert marks.detach(tp) is part and marks.committable() == {} and marks.detach(tp) is None
    part.finish(1)
    marks.attach(tp, part)
    assert marks.committable() == {tp: 2}
