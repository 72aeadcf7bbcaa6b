"""Records the broker serves out of order are not skipped. With several producers batching into
one partition, Tansu can serve a later batch before an earlier one is readable; a reader at the
tail then jumps over the earlier one (a fresh read finds it). This is how the topology test once
missed 5 acknowledged answers. Here three producers batch answers into the answers topic as the
agents do, and the SDK `Client` must see every one (`GapGuard`, actors/kafka.py).
"""

from __future__ import annotations

import asyncio

import msgspec
from aiokafka.partitioner import DefaultPartitioner

from disrouter.actors.config import KafkaSpec
from disrouter.actors.contracts import Answer
from disrouter.actors.kafka import make_producer
from disrouter.client.sdk import Client

PRODUCERS = 3
PER_PRODUCER = 7000


async def batch_answers(bootstrap: str, topic: str, ids: list[str]) -> None:
    """Publish like an agent's Publisher: per partition, the answers gathered while the last
    batch waited its turn go out as one batch."""
    producer = make_producer(KafkaSpec(bootstrap_servers=bootstrap))
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner, encoder = DefaultPartitioner(), msgspec.json.Encoder()
        queued: dict[int, list[str]] = {}
        submitters: dict[int, asyncio.Task] = {}
        acks: list[asyncio.Future] = []

        async def submit(partition: int) -> None:
            while batch_ids := queued.pop(partition, []):
                batch = producer.create_batch()
                for qid in batch_ids:
                    value = encoder.encode(Answer(id=qid, status="answered", alpha=0.5))
                    if batch.append(timestamp=None, key=qid.encode(), value=value, headers=[]) is None:  # full
                        acks.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        batch.append(timestamp=None, key=qid.encode(), value=value, headers=[])
                acks.append(await producer.send_batch(batch, topic, partition=partition))
            del submitters[partition]

        for i, qid in enumerate(ids):
            partition = partitioner(qid.encode(), partitions, partitions)
            queued.setdefault(partition, []).append(qid)
            if partition not in submitters:
                submitters[partition] = asyncio.create_task(submit(partition))
            if i % 3 == 0:
                await asyncio.sleep(0)  # interleave with the other producers
        await asyncio.gather(*submitters.values())  # every id is queued: no submitter starts after these
        await asyncio.gather(*acks)  # every batch acknowledged by the broker
    finally:
        await producer.stop()


async def test_a_reader_sees_every_acknowledged_answer_of_concurrent_producers(kafka_bootstrap, namespace):
    ids = [[f"o{p}-{i}" for i in range(PER_PRODUCER)] for p in range(PRODUCERS)]
    async with Client(kafka_bootstrap, namespace) as client:
        loop = asyncio.get_running_loop()
        # Wait for answers as `ask` would, without sending queries.
        waiting = {qid: client._pending.setdefault(qid, loop.create_future()) for group in ids for qid in group}
        await asyncio.gather(*(batch_answers(kafka_bootstrap, client.answers_topic, group) for group in ids))
        await asyncio.wait(waiting.values(), timeout=120)
        missing = sorted(qid for qid, future in waiting.items() if not future.done())
        print(f"\n[out of order] {len(waiting)} answers from {PRODUCERS} producers; read again after a jump: "
              f"{client._gaps.rereads}; missing {len(missing)}")
    assert not missing, f"acknowledged answers the reader never saw: {missing[:10]}"
