"""A tail reader never skips records the broker serves out of order (actors/kafka.py: GapGuard)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from aiokafka import TopicPartition

from disrouter.actors.kafka import GapGuard

TP = TopicPartition("ns.answers", 0)


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def records(*offsets: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(offset=o) for o in offsets]


def offsets(batches) -> list[int]:
    return [r.offset for r in batches.get(TP, [])]


def test_dense_offsets_pass_through():
    consumer = FakeConsumer()
    guard = GapGuard(consumer)
    assert offsets(guard.check({TP: records(5, 6, 7)})) == [5, 6, 7]
    assert offsets(guard.check({TP: records(8, 9)})) == [8, 9]
    assert consumer.seeks == [] and guard.rereads == 0


def test_a_later_batch_served_first_is_read_again_in_order():
    consumer = FakeConsumer()
    guard = GapGuard(consumer)
    # 3..4 were acknowledged but not yet readable when 5..6 were served: in one fetch …
    assert offsets(guard.check({TP: records(1, 2, 5, 6)})) == [1, 2]
    assert consumer.seeks == [(TP, 3)]
    # … and across fetches.
    assert offsets(guard.check({TP: records(5)})) == []
    assert consumer.seeks == [(TP, 3), (TP, 3)] and guard.rereads == 2
    assert offsets(guard.check({TP: records(3, 4, 5, 6)})) == [3, 4, 5, 6]


def test_a_gap_that_stays_is_taken_as_real_after_the_patience():
    consumer = FakeConsumer()
    guard = GapGuard(consumer, patience_s=0.01)  # e.g. a compacted topic: 3..4 never come
    guard.check({TP: records(1, 2)})
    assert offsets(guard.check({TP: records(5, 6)})) == []  # first sight: read again
    time.sleep(0.02)
    assert offsets(guard.check({TP: records(5, 6)})) == [5, 6]  # still there: accepted


def test_a_seek_or_new_assignment_is_not_a_gap():
    consumer = FakeConsumer()
    guard = GapGuard(consumer)
    guard.check({TP: records(1, 2)})
    guard.forget()
    assert offsets(guard.check({TP: records(40, 41)})) == [40, 41]
    assert offsets(guard.check({TP: records(7)})) == [7]  # read again from below: not a gap
