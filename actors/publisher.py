"""Publishing with bounds: every retry ends, every error is classified, dead letters always fit.

An outcome is finished only once it is on the broker (at-least-once), so a publish that could
wait forever would hold its partition's commits forever. Here:

- errors worth retrying (broker away, leader moving, a request timing out) are retried with
  backoff until `timeouts.publish_s`; anything else (too large, not authorised, a bug) fails at
  once. Both raise `PublishFailed`, which says which it was;
- a dead letter is cut to fit the producer's request limit (`envelope.dead_letter_bytes`), so a
  large bad message can always be dead-lettered;
- `dead_letter` reports whether the record's fate is now recorded: True when the letter is on
  the broker, or when it can never be (an error not worth retrying; logged as an error); False
  when the broker looks away, so the caller leaves the offset unfinished and it is redelivered.

Batching (the hot path): every in-flight query publishes its own outcome and awaits its own
acknowledgement, but records are gathered per topic-partition (all those published while the
partition's previous batch waits its turn) and handed to aiokafka as one batch
(`create_batch`/`send_batch`): one future and one timer per batch instead of aiokafka's
per-record send path. A record counts as published only once the broker acknowledged its
batch, so at-least-once holds as before.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from disrouter.actors.config import AgentConfig
from disrouter.actors.contracts import DeadLetter
from disrouter.actors.envelope import Envelope, dead_letter_bytes
from disrouter.actors.errors import PublishFailed

log = structlog.get_logger("disrouter.publisher")

# Room left in a request for the record's key, headers and framing.
_RECORD_OVERHEAD = 4096
# Records up to this size go into shared batches (aiokafka's batch is 16 kB, so at least one
# always fits an empty one); larger ones, rare, take aiokafka's own path (`send`), which checks
# them against `max_request_size` and gives each a batch of its own.
_BATCHED_BYTES = 8192


def retriable(exc: BaseException) -> bool:
    """Whether retrying could help: the broker's own verdict, plus client-side timeouts."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and bool(exc.retriable))


class _Record:
    """One record waiting for its batch: the publisher's task awaits `acked`."""

    __slots__ = ("value", "key", "headers", "acked")

    def __init__(self, value: bytes, key: bytes, headers: list[tuple[str, bytes]], acked: asyncio.Future) -> None:
        self.value, self.key, self.headers, self.acked = value, key, headers, acked


class Publisher:
    def __init__(self, config: AgentConfig, producer: AIOKafkaProducer, envelope: Envelope, stats: Counter[str]) -> None:
        self.config = config
        self.producer = producer
        self.envelope = envelope
        self.stats = stats
        # The partition of a key, as the producer's own `send` would pick it (same keys, same
        # partitions: a query's hand-offs and answer keep their order per key).
        self._partitioner = DefaultPartitioner()
        # Records waiting for their partition's next batch, and the task handing that partition's
        # batches to aiokafka (one per partition while it has records to send).
        self._queued: defaultdict[tuple[str, int], list[_Record]] = defaultdict(list)
        self._submitters: dict[tuple[str, int], asyncio.Task] = {}

    async def publish(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        deadline = time.monotonic() + self.config.timeouts.publish_s
        delay = 0.1
        while True:
            try:
                # One attempt gets its share of the budget (never more than is left): a hung
                # request is abandoned and the record sent afresh. A full share is bounded by
                # its batch's own timer (`_send_batch`); only a last, shorter one needs a timer
                # of its own.
                left = deadline - time.monotonic()
                if left >= self.config.timeouts.publish_attempt_s:
                    await self._send(topic, value, key, headers or [])
                else:
                    async with asyncio.timeout(max(0.1, left)):
                        await self._send(topic, value, key, headers or [])
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, never retried blindly
                error = exc
            again = retriable(error) or isinstance(error, TimeoutError)
            reason = f"{type(error).__name__}: {error}" if str(error) else f"{type(error).__name__} (no acknowledgement in time)"
            if not again or time.monotonic() + delay >= deadline:
                self.stats["publish_failed"] += 1
                raise PublishFailed(topic, reason, retriable=again) from error
            log.warning("publish_retry", agent=self.config.name, topic=topic, key=key.decode("utf-8", "replace"), error=reason, delay_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
        """One attempt: returns once the broker acknowledged the record's batch."""
        if len(value) + len(key) > _BATCHED_BYTES:
            async with asyncio.timeout(self.config.timeouts.publish_attempt_s):
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
        published meanwhile gather for the batch after it. Each batch settles its records'
        futures when the broker acknowledges it, or fails them after one publish attempt."""
        topic, partition = tp
        loop = asyncio.get_running_loop()
        attempt_s = self.config.timeouts.publish_attempt_s
        records: list[_Record] = []
        try:
            while records := self._queued.pop(tp, []):
                for batch, members in self._batches(records):
                    try:
                        acked = await self.producer.send_batch(batch, topic, partition=partition)
                    except Exception as exc:  # noqa: BLE001 - each record's publisher classifies it
                        _settle(members, exc)
                        continue
                    # One timer per batch bounds the attempt of all its records.
                    expiry = loop.call_later(attempt_s, _settle, members, KafkaTimeoutError("no acknowledgement in time"))
                    acked.add_done_callback(functools.partial(_acknowledged, members, expiry))
        except BaseException:  # cancelled (the loop is closing): no record may wait for ever
            _settle(records + self._queued.pop(tp, []), KafkaTimeoutError("publishing stopped"))
            raise
        finally:
            # Here, not in a done callback: a record queued after this point starts a new submitter.
            del self._submitters[tp]

    def _batches(self, records: list[_Record]) -> Iterator[tuple[Any, list[_Record]]]:
        """`records` in as few aiokafka batches as hold them (each ≤ `_BATCHED_BYTES` fits an empty one)."""
        batch, members = self.producer.create_batch(), list[_Record]()
        for record in records:
            if batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers) is None:
                yield batch, members  # full
                batch, members = self.producer.create_batch(), list[_Record]()
                batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)
            members.append(record)
        yield batch, members

    async def dead_letter(
        self,
        record: Any,
        reason: str,
        kind: str,
        *,
        value: bytes | None = None,
        destination: str | None = None,
    ) -> bool:
        """Dead-letter `record` (or, when publishing an outcome failed, that outcome's bytes)."""
        cfg = self.config
        letter = DeadLetter(
            reason=reason,
            agent=cfg.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            value="",
            key=record.key.decode("utf-8", "replace") if record.key else None,
            error_type=kind,
            timestamp_ms=record.timestamp,
            destination=destination,
        )
        raw = record.value if value is None else value
        data = dead_letter_bytes(letter, raw, cfg.limits.publish_bytes - _RECORD_OVERHEAD, self.envelope.encode)
        key = (letter.key or f"{record.topic}:{record.partition}:{record.offset}").encode()
        try:
            await self.publish(cfg.dlq_topic, data, key)
        except PublishFailed as exc:
            if exc.retriable:
                log.error("dead_letter_deferred", agent=cfg.name, reason=reason, topic=record.topic,
                          partition=record.partition, offset=record.offset, error=exc.reason,
                          note="left unfinished: redelivered once the broker takes writes again")
                return False
            # Nowhere left to record it: this log line is the record. Holding the offset
            # would jam the partition for good, since the same error would come back.
            log.error("dead_letter_failed", agent=cfg.name, reason=reason, topic=record.topic,
                      partition=record.partition, offset=record.offset, error=exc.reason)
            self.stats["dead_letter_failed"] += 1
            return True
        self.stats["dead_lettered"] += 1
        log.warning("dead_letter", agent=cfg.name, reason=reason, kind=kind, topic=record.topic, offset=record.offset,
                    truncated=letter.value_truncated)
        return True


def _acknowledged(records: list[_Record], expiry: asyncio.TimerHandle, acked: asyncio.Future) -> None:
    expiry.cancel()
    _settle(records, acked.exception() if not acked.cancelled() else KafkaTimeoutError("the batch was cancelled"))


def _settle(records: list[_Record], error: BaseException | None) -> None:
    """Tell each record's publisher how its batch went (once: a later word is ignored)."""
    for record in records:
        if record.acked.done():  # settled already, or its publisher gave up (cancelled)
            continue
        if error is None:
            record.acked.set_result(None)
        else:
            record.acked.set_exception(error)
