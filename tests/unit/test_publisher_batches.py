"""Batched publishing (actors/publisher.py): records of one partition share a batch, and each
publish returns only once the broker acknowledged the batch holding its record."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from disrouter.actors.config import AgentConfig
from disrouter.actors.envelope import Envelope
from disrouter.actors.errors import PublishFailed
from disrouter.actors.publisher import Publisher


class FakeBatch:
    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def append(self, *, timestamp, key, value, headers):
        self.keys.append(key)
        return object()


class FakeCluster:
    def partitions_for_topic(self, topic):
        return {0, 1}

    def available_partitions_for_topic(self, topic):
        return {0, 1}


class FakeProducer:
    def __init__(self) -> None:
        self.client = type("Client", (), {"cluster": FakeCluster()})()
        self.sent: list[tuple[str, int, FakeBatch, asyncio.Future]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch, topic, *, partition):
        acked = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, batch, acked))
        return acked


def publisher(producer: FakeProducer) -> Publisher:
    config = AgentConfig(name="small", namespace="ns", cost=0.1, engine={}, input_topics=["ns.agent.small"],
                         answers_topic="ns.answers", dlq_topic="ns.dlq")
    return Publisher(config, producer, Envelope(config.limits), Counter())  # type: ignore[arg-type]


async def test_records_of_a_partition_share_a_batch_and_wait_for_its_acknowledgement():
    producer = FakeProducer()
    pub = publisher(producer)
    keys = [f"q{i}".encode() for i in range(20)]
    publishing = [asyncio.create_task(pub.publish("ns.answers", b"v", key)) for key in keys]
    await asyncio.sleep(0.01)
    assert {partition for _, partition, _, _ in producer.sent} <= {0, 1}
    assert sorted(k for _, _, batch, _ in producer.sent for k in batch.keys) == sorted(keys)
    assert len(producer.sent) <= 2  # one batch per partition, not one send per record
    assert not any(task.done() for task in publishing)  # nothing counts before the broker's word
    first = producer.sent[0]
    first[3].set_result(None)
    await asyncio.sleep(0.01)
    done = {keys[i] for i, task in enumerate(publishing) if task.done()}
    assert done == set(first[2].keys)
    for _, _, _, acked in producer.sent[1:]:
        acked.set_result(None)
    await asyncio.gather(*publishing)


async def test_a_failed_batch_is_classified_for_each_record():
    producer = FakeProducer()
    pub = publisher(producer)
    retried = asyncio.create_task(pub.publish("ns.answers", b"v", b"q1"))
    await asyncio.sleep(0.01)
    producer.sent[0][3].set_exception(KafkaConnectionError())  # worth retrying: sent again
    await asyncio.sleep(0.3)
    assert len(producer.sent) == 2 and not retried.done()
    producer.sent[1][3].set_result(None)
    await retried
    refused = asyncio.create_task(pub.publish("ns.answers", b"v", b"q2"))
    await asyncio.sleep(0.01)
    producer.sent[2][3].set_exception(MessageSizeTooLargeError())  # not worth retrying
    with pytest.raises(PublishFailed) as failed:
        await refused
    assert not failed.value.retriable
