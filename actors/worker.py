"""The consume loop of one agent replica: Kafka in, Agent decision, Kafka out, commit.

    fetch (≤ free slots) ─► decode ─► Agent.process ─► publish ─► finish offset ─► commit

Many queries are in flight at once (engines batch), completion is out of order, and offsets are
committed per partition only up to the lowest unfinished one (`watermark.py`). A query is
finished only after its outcome is published, so a crash anywhere re-delivers it: at-least-once.
When `max_in_flight` queries are running the consumer pauses its partitions, so prefetching
stops too and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from disrouter.actors.agent import Agent, Final, Forward, Outcome
from disrouter.actors.config import AgentConfig
from disrouter.actors.contracts import DeadLetter
from disrouter.actors.engine import Engine
from disrouter.actors.envelope import Envelope, raw_value
from disrouter.actors.errors import MalformedMessage
from disrouter.actors.kafka import ensure_topics, make_consumer, make_producer
from disrouter.actors.watermark import PartitionWatermark, Watermarks

log = structlog.get_logger("disrouter.worker")


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: AgentWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Commit what is finished before another replica takes the partitions over; work still
        # in flight for them will be redone there (at-least-once), not lost.
        await self.worker.commit()
        self.worker.watermarks.drop(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned", agent=self.worker.config.name, partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


class AgentWorker:
    def __init__(self, config: AgentConfig, engine: Engine) -> None:
        self.config = config
        self.agent = Agent(config, engine)
        self.engine = engine
        self.envelope = Envelope(config.limits)
        self.watermarks = Watermarks()
        self.stats: Counter[str] = Counter()
        self._producer: AIOKafkaProducer | None = None  # made in start(): they need a running loop
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._paused = False
        self._loop_task: asyncio.Task | None = None
        self._commit_task: asyncio.Task | None = None
        self._started_at = time.time()
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}"

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        await self.engine.start()
        self.agent.check_engine()
        if cfg.kafka.create_topics:
            await ensure_topics(cfg.kafka, cfg.all_topics or [*cfg.input_topics, cfg.answers_topic, cfg.dlq_topic])
        self._producer = make_producer(cfg.kafka, max_request_size=cfg.limits.max_message_bytes * 2)
        self._consumer = make_consumer(cfg.kafka, group_id=cfg.group_id, max_poll_records=cfg.max_in_flight)
        await self._producer.start()
        self._consumer.subscribe(cfg.input_topics, listener=_Rebalance(self))
        await self._consumer.start()
        self._loop_task = asyncio.create_task(self._consume(), name=f"consume-{cfg.name}")
        self._commit_task = asyncio.create_task(self._commit_periodically(), name=f"commit-{cfg.name}")
        log.info("agent_started", agent=cfg.name, topics=cfg.input_topics, group=cfg.group_id)

    @property
    def failure(self) -> BaseException | str | None:
        """Why the loop is dead, or None while it is healthy."""
        for task in (self._loop_task, self._commit_task):
            if task is None or not task.done():
                continue
            if task.cancelled():
                return None if self._stopping.is_set() else "task cancelled"
            return task.exception() or (None if self._stopping.is_set() else "task exited")
        return None

    async def stop(self) -> None:
        """Stop fetching, let in-flight queries finish (bounded), commit, close clients."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._slot_freed.set()
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=self.config.drain_timeout_s)
            for task in pending:  # not finished → not committed → re-delivered to the group
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._commit_task:
            self._commit_task.cancel()
            await asyncio.gather(self._commit_task, return_exceptions=True)
        if self._consumer is not None:
            await self.commit()
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        await self.engine.close()
        log.info("agent_stopped", agent=self.config.name, **self.stats)

    # --- the loop ------------------------------------------------------------------------------

    async def _consume(self) -> None:
        consumer = self._consumer
        while not self._stopping.is_set():
            free = self.config.max_in_flight - len(self._tasks)
            if free <= 0:
                self._pause(True)
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._pause(False)
            batches = await consumer.getmany(timeout_ms=100, max_records=free)
            for tp, records in batches.items():
                for record in records:
                    part = self.watermarks.start(tp, record.offset)
                    task = asyncio.create_task(self._handle(record, part))
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)

    def _pause(self, pause: bool) -> None:
        if pause == self._paused:
            return
        partitions = self._consumer.assignment()
        if pause:
            self._consumer.pause(*partitions)
        else:
            self._consumer.resume(*self._consumer.paused())
        self._paused = pause

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("handler_crashed", agent=self.config.name, error=repr(task.exception()))

    async def _handle(self, record: Any, part: PartitionWatermark) -> None:
        self.stats["consumed"] += 1
        try:
            query = self.envelope.decode(record.value, record.key)
        except MalformedMessage as exc:
            await self._dead_letter(record, exc.reason, exc.kind)
            part.finish(record.offset)
            return
        try:
            outcome = await self.agent.process(query)
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the query: DLQ it
            log.exception("process_failed", query_id=query.id, agent=self.config.name)
            await self._dead_letter(record, f"internal error: {type(exc).__name__}: {exc}", "internal")
            part.finish(record.offset)
            return
        await self._publish_outcome(query.id or "", outcome)
        part.finish(record.offset)

    async def _publish_outcome(self, query_id: str, outcome: Outcome) -> None:
        if isinstance(outcome, Forward):
            await self._publish(outcome.peer.topic, self.envelope.encode(outcome.query), query_id)
            self.stats["rejected"] += 1
        elif isinstance(outcome, Final):
            await self._publish(outcome.topic, self.envelope.encode(outcome.answer), query_id)
            self.stats["answered" if outcome.answer.status == "answered" else "unanswered"] += 1

    async def _dead_letter(self, record: Any, reason: str, kind: str) -> None:
        value, encoding = raw_value(record.value)
        letter = DeadLetter(
            reason=reason,
            agent=self.config.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            value=value,
            value_encoding=encoding,
            key=record.key.decode("utf-8", "replace") if record.key else None,
            error_type=kind,
            timestamp_ms=record.timestamp,
        )
        key = letter.key or f"{record.topic}:{record.partition}:{record.offset}"
        await self._publish(self.config.dlq_topic, self.envelope.encode(letter), key)
        self.stats["dead_lettered"] += 1
        log.warning("dead_letter", agent=self.config.name, reason=reason, topic=record.topic, offset=record.offset)

    async def _publish(self, topic: str, value: bytes, key: str) -> None:
        """Publish with retries: an outcome is only ever finished once it is on the broker."""
        delay = 0.1
        while True:
            try:
                await self._producer.send_and_wait(topic, value, key=key.encode())
                return
            except KafkaError as exc:
                if self._stopping.is_set() and delay > 1.0:
                    raise  # shutting down: leave the offset uncommitted; it is redelivered
                log.warning("publish_retry", topic=topic, query_id=key, error=repr(exc), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- commits -------------------------------------------------------------------------------

    async def commit(self) -> None:
        offsets = self.watermarks.committable()
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: the new owner re-reads from the last commit.
            log.warning("commit_failed", agent=self.config.name, error=repr(exc))
            return
        self.watermarks.mark_committed(offsets)

    async def _commit_periodically(self) -> None:
        interval = self.config.kafka.commit_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            await self.commit()

    def snapshot(self) -> dict[str, Any]:
        return {
            "agent": self.config.name,
            "replica": self.replica_id,
            "in_flight": len(self._tasks),
            "assigned": sorted(f"{tp.topic}:{tp.partition}" for tp in (self._consumer.assignment() if self._consumer else ())),
            "uptime_s": round(time.time() - self._started_at, 1),
            "healthy": self.failure is None,
            **self.stats,
        }

