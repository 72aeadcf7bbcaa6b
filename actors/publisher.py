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
acknowledgement, but records of one partition share aiokafka batches (`batching.py`); a record
counts as published only once the broker acknowledged its batch, so at-least-once holds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from disrouter.actors.batching import BatchSender
from disrouter.actors.config import AgentConfig
from disrouter.actors.contracts import DeadLetter
from disrouter.actors.envelope import Envelope, dead_letter_bytes
from disrouter.actors.errors import PublishFailed

log = structlog.get_logger("disrouter.publisher")

# Room left in a request for the record's key, headers and framing.
_RECORD_OVERHEAD = 4096


def retriable(exc: BaseException) -> bool:
    """Whether retrying could help: the broker's own verdict, plus client-side timeouts."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and bool(exc.retriable))


class Publisher:
    def __init__(self, config: AgentConfig, producer: AIOKafkaProducer, envelope: Envelope, stats: Counter[str]) -> None:
        self.config = config
        self.producer = producer
        self.envelope = envelope
        self.stats = stats
        self.sender = BatchSender(producer, config.timeouts.publish_attempt_s)

    async def publish(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        deadline = time.monotonic() + self.config.timeouts.publish_s
        delay = 0.1
        while True:
            try:
                # One attempt gets its share of the budget (never more than is left): a hung
                # request is abandoned and the record sent afresh. A full share is bounded by
                # its batch's own timer (`batching.py`); only a last, shorter one needs a timer
                # of its own.
                left = deadline - time.monotonic()
                if left >= self.config.timeouts.publish_attempt_s:
                    await self.sender.send(topic, value, key, headers)
                else:
                    async with asyncio.timeout(max(0.1, left)):
                        await self.sender.send(topic, value, key, headers)
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
