"""Produce many small records without aiokafka's per-record send path.

Every caller sends its own record and awaits its own acknowledgement, but the records are
gathered per topic-partition (all those sent while the partition's previous batch waits its
turn) and handed to aiokafka as one batch (`create_batch`/`send_batch`): one future and one
timer per batch instead of a `send` coroutine, a future and a timer per record. A record counts
as sent only once the broker acknowledged its batch, so a caller that awaits `send` before
finishing its work keeps at-least-once. Records of one partition that share batches keep the
order they were sent in; one too large to share a batch (`BATCHED_BYTES`) takes aiokafka's own
path and may pass them (nothing in DiSRouter relies on an order across keys).

Used by the agents' publisher (`publisher.py`, which adds retries) and by the client SDK.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

# Records up to this size go into shared batches (aiokafka's batch is 16 kB, so at least one
# always fits an empty one); larger ones, rare, take aiokafka's own path (`send`), which checks
# them against `max_request_size` and gives each a batch of its own.
BATCHED_BYTES = 8192


class _Record:
    """One record waiting for its batch: its sender awaits `acked`."""

    __slots__ = ("value", "key", "headers", "acked")

    def __init__(self, value: bytes, key: bytes, headers: list[tuple[str, bytes]], acked: asyncio.Future) -> None:
        self.value, self.key, self.headers, self.acked = value, key, headers, acked


class BatchSender:
    def __init__(self, producer: AIOKafkaProducer, attempt_s: float) -> None:
        self.producer = producer
        # How long one attempt may wait for the broker's acknowledgement.
        self.attempt_s = attempt_s
        # The partition of a key, as the producer's own `send` would pick it (same keys, same
        # partitions: a query's hand-offs and answer keep their order per key).
        self._partitioner = DefaultPartitioner()
        # Records waiting for their partition's next batch, and the task handing that partition's
        # batches to aiokafka (one per partition while it has records to send).
        self._queued: defaultdict[tuple[str, int], list[_Record]] = defaultdict(list)
        self._submitters: dict[tuple[str, int], asyncio.Task] = {}

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        """One attempt: returns once the broker acknowledged the record's batch; raises what
        the batch failed with, or a timeout (`KafkaTimeoutError`, or `TimeoutError` for a
        record too large to share a batch) after `attempt_s`."""
        headers = headers or []
        if len(value) + len(key) > BATCHED_BYTES:
            async with asyncio.timeout(self.attempt_s):
                await self.producer.send_and_wait(topic, value, key=key, headers=headers)
            return
        cluster = self.producer.client.cluster
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:  # metadata not loaded yet (first record to this topic): wait for it
            partitions = await self.producer.partitions_for(topic)
        tp = (topic, self._partitioner(key, sorted(partitions), list(cluster.available_partitions_for_topic(topic))))
        record = _Record(value, key, headers, asyncio.get_running_loop().create_future())
        self._queued[tp].append(record)
        if tp not in self._submitters:  # else the partition's submitter takes it with its next batch
            self._submitters[tp] = asyncio.create_task(self._submit(tp))
        await record.acked

    async def _submit(self, tp: tuple[str, int]) -> None:
        """Hand a partition's queued records to aiokafka as batches, one at a time: aiokafka
        takes a partition's next batch once the last one left for the broker, and records
        sent meanwhile gather for the batch after it. Each batch settles its records'
        futures when the broker acknowledges it, or fails them after one attempt."""
        topic, partition = tp
        loop = asyncio.get_running_loop()
        records: list[_Record] = []
        try:
            while records := self._queued.pop(tp, []):
                for batch, members in self._batches(records):
                    try:
                        acked = await self.producer.send_batch(batch, topic, partition=partition)
                    except Exception as exc:  # noqa: BLE001 - each record's sender classifies it
                        _settle(members, exc)
                        continue
                    # One timer per batch bounds the attempt of all its records.
                    expiry = loop.call_later(self.attempt_s, _settle, members, KafkaTimeoutError("no acknowledgement in time"))
                    acked.add_done_callback(functools.partial(_acknowledged, members, expiry))
        except BaseException:  # cancelled (the loop is closing): no record may wait for ever
            _settle(records + self._queued.pop(tp, []), KafkaTimeoutError("sending stopped"))
            raise
        finally:
            # Here, not in a done callback: a record queued after this point starts a new submitter.
            del self._submitters[tp]

    def _batches(self, records: list[_Record]) -> Iterator[tuple[Any, list[_Record]]]:
        """`records` in as few aiokafka batches as hold them (each ≤ `BATCHED_BYTES` fits an empty one)."""
        batch, members = self.producer.create_batch(), list[_Record]()
        for record in records:
            if batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers) is None:
                yield batch, members  # full
                batch, members = self.producer.create_batch(), list[_Record]()
                batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)
            members.append(record)
        yield batch, members


def _acknowledged(records: list[_Record], expiry: asyncio.TimerHandle, acked: asyncio.Future) -> None:
    expiry.cancel()
    _settle(records, acked.exception() if not acked.cancelled() else KafkaTimeoutError("the batch was cancelled"))


def _settle(records: list[_Record], error: BaseException | None) -> None:
    """Tell each record's sender how its batch went (once: a later word is ignored)."""
    for record in records:
        if record.acked.done():  # settled already, or its sender gave up (cancelled)
            continue
        if error is None:
            record.acked.set_result(None)
        else:
            record.acked.set_exception(error)
