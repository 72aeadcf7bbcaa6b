"""`BatchSender` (actors/batching.py), shared by the publisher and the client SDK: records of a
partition keep the order they were sent in across batches, each sender learns its own batch's
fate, and an attempt the broker never acknowledges ends."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from disrouter.actors.batching import BatchSender
from tests.unit.test_publisher_batches import FakeProducer


def _keys(producer: FakeProducer) -> list[bytes]:
    return [k for _, _, batch, _ in producer.sent for k in batch.keys]


async def test_records_sent_while_a_batch_waits_follow_it_in_order():
    producer = FakeProducer()
    sender = BatchSender(producer, attempt_s=30)  # type: ignore[arg-type]
    key = b"same-key"  # one partition
    first = [asyncio.create_task(sender.send("t", b"1", key)) for _ in range(3)]
    await asyncio.sleep(0)  # the partition's submitter takes these three as its first batch
    await asyncio.sleep(0)
    later = [asyncio.create_task(sender.send("t", b"2", key)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert [len(batch.keys) for _, _, batch, _ in producer.sent] == [3, 2]
    assert len({partition for _, partition, _, _ in producer.sent}) == 1
    # The second batch's acknowledgement settles its records only.
    producer.sent[1][3].set_result(None)
    await asyncio.gather(*later)
    assert not any(task.done() for task in first)
    producer.sent[0][3].set_exception(NotLeaderForPartitionError())
    for task in first:
        with pytest.raises(NotLeaderForPartitionError):
            await task


async def test_an_unacknowledged_attempt_ends_with_a_timeout_and_the_next_send_goes_out():
    producer = FakeProducer()
    sender = BatchSender(producer, attempt_s=0.05)  # type: ignore[arg-type]
    with pytest.raises(KafkaTimeoutError):
        await sender.send("t", b"v", b"k")
    again = asyncio.create_task(sender.send("t", b"v", b"k"))
    await asyncio.sleep(0.01)
    assert len(producer.sent) == 2  # a new batch, not one stuck behind the first
    producer.sent[1][3].set_result(None)
    await again
    assert _keys(producer) == [b"k", b"k"]


async def test_a_cancelled_sender_does_not_disturb_its_batch():
    producer = FakeProducer()
    sender = BatchSender(producer, attempt_s=30)  # type: ignore[arg-type]
    gone = asyncio.create_task(sender.send("t", b"v", b"a"))
    kept = asyncio.create_task(sender.send("t", b"v", b"a"))
    await asyncio.sleep(0.01)
    gone.cancel()
    producer.sent[0][3].set_result(None)
    await kept
    assert gone.cancelled()
