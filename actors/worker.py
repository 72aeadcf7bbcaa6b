"""The consume loop of one agent replica: Kafka in, Agent decision, Kafka out, commit.

    fetch (≤ free slots) ─► admit (boundary) ─► Agent.process ─► publish ─► finish offset ─► commit

Many queries are in flight at once (engines batch), completion is out of order, and offsets are
committed per partition only up to the lowest unfinished one (`watermark.py`). A query is
finished only once its fate is recorded on the broker (its outcome, or a dead letter), so a
crash anywhere re-delivers it: at-least-once. When `max_in_flight` queries are running the
consumer pauses its partitions (memory stays bounded) but keeps polling, so the replica never
leaves its group for being idle.

Liveness: every step is bounded (`Timeouts`): an engine that hangs ends the query `unanswered`
after `process_s` (one deadline sweep for the replica, not a timer per query); a publish gives
up after `publish_s` (`publisher.py`); an outcome that cannot be published is dead-lettered and
the client still gets an `unanswered` Answer with the reason. Health (`failure`) reports a dead
loop and also a stalled one: no poll, or a query in work, for longer than `stall_s`. Rebalances
fence in-flight work (`rebalance.py`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from typing import Any

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from disrouter.actors import topics
from disrouter.actors.agent import Agent, Final, Forward, Outcome
from disrouter.actors.boundary import Boundary
from disrouter.actors.config import MAX_HOP_ERROR_CHARS, AgentConfig
from disrouter.actors.contracts import Answer, Hop, Query, Totals
from disrouter.actors.decision import resolve_alpha
from disrouter.actors.engine import Engine
from disrouter.actors.envelope import Envelope
from disrouter.actors.errors import MalformedMessage, PublishFailed
from disrouter.actors.kafka import GapGuard, committed_offsets, ensure_topics, list_topics, make_consumer, make_producer
from disrouter.actors.metrics import AgentMetrics
from disrouter.actors.publisher import Publisher
from disrouter.actors.rebalance import RebalanceFence, Work
from disrouter.actors.streaming import ChunkPublisher
from disrouter.actors.trust import TrustKeys
from disrouter.actors.watermark import Watermarks

log = structlog.get_logger("disrouter.worker")

# While full, how often the loop wakes to poll (keeps group membership) and check for slots.
_FULL_POLL_S = 1.0
# How often overdue engine calls are looked for: at most this long, or a tenth of
# `timeouts.process_s`, after their deadline.
_EXPIRY_SWEEP_S = 1.0


class AgentWorker:
    def __init__(self, config: AgentConfig, engine: Engine) -> None:
        self.config = config
        self.agent = Agent(config, engine)
        self.engine = engine
        self.envelope = Envelope(config.limits)
        self.watermarks = Watermarks()
        self.stats: Counter[str] = Counter()
        # Made in start(): the key is read inside the replica, and aiokafka needs a running loop.
        self._boundary: Boundary | None = None
        self._publisher: Publisher | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._fence = RebalanceFence(self)
        self._tasks: set[asyncio.Task] = set()
        self._work: dict[asyncio.Task, Work] = {}
        # Offsets whose handling ended without recording their fate (the broker was away):
        # they hold their partition's commits until a restart redelivers them.
        self._stuck: dict[tuple[TopicPartition, int], float] = {}
        # Topics of agents a redeploy removed (→ the agent's name), read by the entry agent, and
        # where each removed agent's group left their partitions.
        self._orphans: dict[str, str] = {}
        self._orphan_offsets: dict[TopicPartition, int] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._paused = False
        self._loop_task: asyncio.Task | None = None
        self._commit_task: asyncio.Task | None = None
        self._expiry_task: asyncio.Task | None = None
        self._last_poll = time.monotonic()
        self._started_at = time.time()
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}"
        # Told of every published outcome (`metrics.py`); None outside Serve (tests, tools).
        self.observer: AgentMetrics | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        # The trust key first: a replica that could neither verify nor sign hand-offs must not
        # start (it would dead-letter every hand-off, or accept forged ones).
        self._boundary = boundary = Boundary(cfg, TrustKeys.load(cfg.trust), self.envelope)
        await self.engine.start()
        self.agent.check_engine()
        if cfg.kafka.create_topics:
            await ensure_topics(cfg.kafka, cfg.all_topics or [*cfg.input_topics, cfg.answers_topic, cfg.dlq_topic])
        if cfg.agents:  # the entry agent re-routes what removed agents left behind
            self._orphans = await self._find_orphans()
        # A produce request lasts one publish attempt (and holds stop() no longer).
        self._producer = make_producer(cfg.kafka, max_request_size=cfg.limits.publish_bytes,
                                       request_timeout_ms=int(cfg.timeouts.publish_attempt_s * 1000))
        self._consumer = make_consumer(cfg.kafka, group_id=cfg.group_id, max_poll_records=cfg.max_in_flight)
        # A record the broker serves out of order is read again, never skipped: a skipped offset
        # would be committed past, and its query lost.
        self._gaps = GapGuard(self._consumer)
        self._publisher = Publisher(cfg, self._producer, self.envelope, self.stats)
        await self._producer.start()
        self._consumer.subscribe([*cfg.input_topics, *self._orphans], listener=self._fence)
        await self._consumer.start()
        self._last_poll = time.monotonic()
        self._loop_task = asyncio.create_task(self._consume(), name=f"consume-{cfg.name}")
        self._commit_task = asyncio.create_task(self._commit_periodically(), name=f"commit-{cfg.name}")
        self._expiry_task = asyncio.create_task(self._expire_periodically(), name=f"expire-{cfg.name}")
        log.info("agent_started", agent=cfg.name, topics=cfg.input_topics, group=cfg.group_id, trust=boundary.keys.source)

    async def _find_orphans(self) -> dict[str, str]:
        """Agent topics of this namespace that belong to no agent of the topology: a redeploy
        removed their agent, and hand-offs may still wait there."""
        cfg = self.config
        prefix = topics.agent(cfg.namespace, "")
        current = {peer.topic for peer in cfg.agents}
        try:
            orphans = {t: t[len(prefix):] for t in await list_topics(cfg.kafka) if t.startswith(prefix) and t not in current}
            for topic, removed in orphans.items():
                self._orphan_offsets.update(await committed_offsets(cfg.kafka, topics.agent(cfg.namespace, removed), topic))
        except KafkaError as exc:  # e.g. ACLs that do not let the entry see other agents' topics
            log.warning("orphan_topics_unknown", agent=cfg.name, error=repr(exc),
                        note="hand-offs left for removed agents are not re-routed by this replica")
            self._orphan_offsets.clear()
            return {}
        if orphans:
            log.info("orphan_topics", agent=cfg.name, removed=sorted(orphans.values()))
        return orphans

    async def orphans_assigned(self, assigned: set[TopicPartition]) -> None:
        """Read a removed agent's topic from where its own group left off, not from the start
        (which would redo everything it ever answered): until this group commits there."""
        for tp in assigned:
            offset = self._orphan_offsets.get(tp)
            if offset is not None and await self.consumer.committed(tp) is None:
                self.consumer.seek(tp, offset)

    # What start() makes; using one before it is a bug, said as such.
    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the worker is not started")
        return self._consumer

    @property
    def boundary(self) -> Boundary:
        if self._boundary is None:
            raise RuntimeError("the worker is not started")
        return self._boundary

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise RuntimeError("the worker is not started")
        return self._publisher

    @property
    def failure(self) -> BaseException | str | None:
        """Why the loop is dead or stalled, or None while it is healthy."""
        for task in (self._loop_task, self._commit_task, self._expiry_task):
            if task is None or not task.done():
                continue
            if task.cancelled():
                return None if self._stopping.is_set() else "task cancelled"
            return task.exception() or (None if self._stopping.is_set() else "task exited")
        if self._loop_task is None or self._stopping.is_set():
            return None
        return self.stalled()

    def stalled(self) -> str | None:
        """No progress with work pending: the loop stopped polling, or a query has been in
        work (or left unfinished) for longer than `timeouts.stall_s`."""
        limit = self.config.timeouts.stall_s
        now = time.monotonic()
        if now - self._last_poll > limit:
            return f"stalled: the consume loop has not polled for {now - self._last_poll:.0f} s (timeouts.stall_s={limit:g})"
        oldest = min([w.started for w in self._work.values()] + list(self._stuck.values()), default=None)
        if oldest is not None and now - oldest > limit:
            return f"stalled: a query has been in work for {now - oldest:.0f} s without its fate recorded (timeouts.stall_s={limit:g})"
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
        self._fence.release_all()  # fenced work has no owner decision coming: it is redone
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=self.config.drain_timeout_s)
            for task in pending:  # not finished → not committed → re-delivered to the group
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for periodic in (self._commit_task, self._expiry_task):
            if periodic:
                periodic.cancel()
                await asyncio.gather(periodic, return_exceptions=True)
        if self._consumer is not None:
            await self.commit()
            await self._quietly("consumer", self._consumer.stop())
        if self._producer is not None:
            await self._quietly("producer", self._producer.stop())
        await self._quietly("engine", self.engine.close())
        log.info("agent_stopped", agent=self.config.name, **self.stats)

    async def _quietly(self, what: str, closing) -> None:
        """Close one thing whatever happens to it, so the next one still gets closed.

        With the broker gone, aiokafka's stop() can raise the CancelledError of one of its own
        tasks: only a cancellation of this task (Serve giving up on the stop) goes on up.
        """
        try:
            await closing
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            log.warning("close_failed", agent=self.config.name, what=what, error="cancelled inside the client")
        except Exception as exc:  # noqa: BLE001 - stopping: report and carry on closing
            log.warning("close_failed", agent=self.config.name, what=what, error=repr(exc))

    # --- the loop ------------------------------------------------------------------------------

    async def _consume(self) -> None:
        consumer = self.consumer
        while not self._stopping.is_set():
            self._last_poll = time.monotonic()
            free = self.config.max_in_flight - len(self._tasks)
            if free <= 0:
                self._pause(True)
                self._slot_freed.clear()
                try:
                    await asyncio.wait_for(self._slot_freed.wait(), _FULL_POLL_S)
                    continue
                except TimeoutError:
                    pass
                # Still full: poll the paused partitions anyway (it returns nothing), since
                # aiokafka leaves the group when the consumer has not polled for
                # max_poll_interval_ms. A rebalance meanwhile hands over unpaused partitions.
                self._pause(True)
                batches = self._gaps.check(await consumer.getmany(timeout_ms=0))
            else:
                self._pause(False)
                batches = self._gaps.check(await consumer.getmany(timeout_ms=100, max_records=free))
            assigned = consumer.assignment()
            for tp, records in batches.items():
                if tp not in assigned:
                    continue  # fetched before a rebalance took the partition
                for record in records:  # a fetched record is never dropped: its offset moved on
                    self._start(tp, record)

    def _start(self, tp: TopicPartition, record: Any) -> None:
        try:
            part = self.watermarks.start(tp, record.offset)
        except ValueError as exc:  # already started here (read again): never run twice
            self.stats["skipped_reread"] += 1
            log.warning("offset_skipped", agent=self.config.name, partition=f"{tp.topic}:{tp.partition}", error=str(exc))
            return
        work = Work(tp, record.offset, part, time.monotonic())
        task = asyncio.create_task(self._handle(record, work))
        work.task = task
        self._work[task] = work
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _pause(self, pause: bool) -> None:
        if pause == self._paused:
            return
        consumer = self.consumer
        if pause:
            consumer.pause(*consumer.assignment())
        else:
            consumer.resume(*consumer.paused())
        self._paused = pause

    def assignment_changed(self) -> None:
        # A new assignment starts unpaused; the loop pauses it again if it is still full. Its
        # partitions are read from where the group (or a resumed fence) puts them.
        self._paused = False
        self._gaps.forget()

    def works(self) -> list[Work]:
        return list(self._work.values())

    def forget_stuck(self, tps: set[TopicPartition]) -> None:
        for key in [k for k in self._stuck if k[0] in tps]:
            del self._stuck[key]

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._work.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("handler_crashed", agent=self.config.name, error=repr(task.exception()))

    # --- one record ----------------------------------------------------------------------------

    async def _handle(self, record: Any, work: Work) -> None:
        self.stats["consumed"] += 1
        try:
            recorded = await self._run(record, work)
        except asyncio.CancelledError:
            raise  # revoked or stopping: left unfinished, so it is redone by the next owner
        except Exception as exc:  # noqa: BLE001 - a bug must neither lose the query nor jam the partition
            log.exception("handler_failed", agent=self.config.name, topic=record.topic, offset=record.offset)
            await work.enter_publishing()
            recorded = await self.publisher.dead_letter(
                record, f"internal error at {self.config.name!r}: {type(exc).__name__}: {exc}", "internal"
            )
        if recorded:
            work.part.finish(record.offset)
        else:
            self._stuck[(work.tp, record.offset)] = work.started

    async def _run(self, record: Any, work: Work) -> bool:
        """Handle one record; True once its fate is recorded (outcome or dead letter)."""
        try:
            query = self.boundary.admit(record.topic, record.key, record.value, record.headers)
        except MalformedMessage as exc:
            await work.enter_publishing()
            return await self.publisher.dead_letter(record, exc.reason, exc.kind)
        # Bound for the rest of this hop, in this task's context only: every line the agent,
        # engine and publisher log while handling it carries the query id and the agent.
        structlog.contextvars.bind_contextvars(query_id=query.id, agent=self.config.name)
        started = time.perf_counter()
        removed = self._orphans.get(record.topic)
        outcome, internal = (self.agent.reroute(query, removed), None) if removed else await self._process(query, work)
        processed = time.perf_counter()
        await work.enter_publishing()
        if internal is not None and not await self.publisher.dead_letter(record, internal, "internal"):
            return False
        recorded = await self._deliver(record, query, outcome)
        log.info("hop_done", decision="reject" if isinstance(outcome, Forward) else outcome.answer.status,
                 to=outcome.peer.name if isinstance(outcome, Forward) else outcome.topic, recorded=recorded,
                 process_ms=round((processed - started) * 1000.0, 3), publish_ms=round((time.perf_counter() - processed) * 1000.0, 3))
        return recorded

    async def _process(self, query: Query, work: Work) -> tuple[Outcome, str | None]:
        """The agent's outcome; a query that asked for streaming also has its answer's text
        published as it is generated (best effort, `streaming.py`), until the outcome is known."""
        cfg = self.config
        chunks = None
        if query.stream and cfg.stream_topic and self._producer is not None:
            chunks = ChunkPublisher(self._producer, cfg.stream_topic, query.id or "", cfg.name, self.stats,
                                    send_timeout_s=min(2.0, cfg.timeouts.publish_attempt_s))
        try:
            return await self._process_once(query, work, chunks.offer if chunks else None)
        finally:
            if chunks is not None:
                chunks.close()

    async def _process_once(self, query: Query, work: Work, on_text: Any = None) -> tuple[Outcome, str | None]:
        """The agent's outcome; a timeout or a bug becomes an `unanswered` Final (plus, for a
        bug, the reason to dead-letter the record with)."""
        cfg = self.config
        started = time.perf_counter()
        work.deadline = time.monotonic() + cfg.timeouts.process_s
        try:
            return await self.agent.process(query, on_text), None
        except asyncio.CancelledError:
            # Only the deadline sweep's own cancellation is a timeout (as `asyncio.timeout`
            # tells its own apart): a revoke or a stop, even at the same time, goes on up.
            task = asyncio.current_task()
            if not work.expired or task is None or task.uncancel() > 0:
                raise
            reason = f"timed out after {cfg.timeouts.process_s:g} s at {cfg.name!r} (timeouts.process_s)"
            self.stats["timed_out"] += 1
            internal = None
        except Exception as exc:  # noqa: BLE001 - a bug in the agent: dead-letter and answer
            log.exception("process_failed", query_id=query.id, agent=cfg.name)
            reason = f"internal error at {cfg.name!r}: {type(exc).__name__}: {exc}"
            internal = reason
        finally:
            work.deadline = None
        hop = Hop(agent=cfg.name, decision="reject", cost=cfg.cost, error=reason[:MAX_HOP_ERROR_CHARS],
                  latency_ms=round((time.perf_counter() - started) * 1000.0, 3))
        return Final(query.reply_to or cfg.answers_topic, self._unanswered(query, [*query.trail, hop], reason)), internal

    def _unanswered(self, query: Query, trail: list[Hop], reason: str) -> Answer:
        alpha, scenario = resolve_alpha(query.alpha, query.scenario, self.config.default_alpha)
        return Answer(id=query.id or "", status="unanswered", alpha=alpha, scenario=scenario, reason=reason,
                      trail=trail, totals=Totals.of(trail), tags=query.tags, metadata=query.metadata)

    async def _deliver(self, record: Any, query: Query, outcome: Outcome) -> bool:
        cfg = self.config
        key = (query.id or "").encode()
        if isinstance(outcome, Forward):
            forwarded = msgspec.structs.replace(outcome.query, trail=_bounded(outcome.query.trail))
            value = self.envelope.encode(forwarded)
            if len(value) <= cfg.limits.handoff_bytes:
                topic = outcome.peer.topic
                try:
                    await self.publisher.publish(topic, value, key, self.boundary.sign(topic, key, value))
                except PublishFailed as exc:
                    return await self._undeliverable(record, query, forwarded.trail, exc, value)
                self.stats["rejected"] += 1
                if self.observer is not None:
                    self.observer.hop(forwarded.trail[-1])
                return True
            # Cannot happen for a query the entry accepted (hand-offs have room for a full
            # trail), but a hand-off the next agent would refuse must end here, answered.
            reason = (f"cannot pass the query on from {cfg.name!r}: with its trail it is {len(value)} bytes, "
                      f"over the {cfg.limits.handoff_bytes} an agent accepts")
            outcome = Final(query.reply_to or cfg.answers_topic, self._unanswered(query, forwarded.trail, reason))
        value = self.envelope.encode(outcome.answer)
        try:
            await self.publisher.publish(outcome.topic, value, key)
        except PublishFailed as exc:
            return await self._undeliverable(record, query, outcome.answer.trail, exc, value)
        self.stats["answered" if outcome.answer.status == "answered" else "unanswered"] += 1
        if self.observer is not None:
            self.observer.ended(outcome.answer)
        return True

    async def _undeliverable(self, record: Any, query: Query, trail: list[Hop], exc: PublishFailed, value: bytes) -> bool:
        """An outcome that cannot be published: dead-letter it, and tell the client."""
        cfg = self.config
        if not await self.publisher.dead_letter(record, str(exc), "publish", value=value, destination=exc.topic):
            return False
        answer = self._unanswered(query, trail, str(exc))
        # The answer without what may have made the outcome too large (the user's metadata).
        answer = msgspec.structs.replace(answer, metadata={})
        data = self.envelope.encode(answer)
        if len(data) > cfg.limits.max_message_bytes:
            data = self.envelope.encode(msgspec.structs.replace(answer, trail=[], tags=[]))
        key = (query.id or "").encode()
        for topic in dict.fromkeys([query.reply_to or cfg.answers_topic, cfg.answers_topic]):
            try:
                await self.publisher.publish(topic, data, key)
            except PublishFailed as again:
                log.error("unanswered_not_published", agent=cfg.name, query_id=query.id, topic=topic, error=again.reason)
                continue
            self.stats["unanswered"] += 1
            return True
        return True  # the dead letter records it; holding the offset would not help

    # --- commits -------------------------------------------------------------------------------

    async def commit(self) -> None:
        offsets = self.watermarks.committable()
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: the new owner re-reads from the last commit.
            log.warning("commit_failed", agent=self.config.name, error=repr(exc))
            return
        self.watermarks.mark_committed(offsets)

    # --- deadlines ---------------------------------------------------------------------------

    async def _expire_periodically(self) -> None:
        """One sweep for the replica instead of an `asyncio.timeout` (a timer, pushed on and
        taken off the loop's heap) per query: overdue engine calls end a little late (at most
        `_EXPIRY_SWEEP_S`, or a tenth of `process_s`), which the stall bound leaves room for."""
        interval = min(_EXPIRY_SWEEP_S, self.config.timeouts.process_s / 10)
        while True:
            await asyncio.sleep(interval)
            self.expire_overdue()

    def expire_overdue(self, now: float | None = None) -> int:
        """Cancel the tasks whose engine call is past its deadline; `_process_once` turns that
        cancellation into an `unanswered` outcome. Returns how many."""
        now = time.monotonic() if now is None else now
        overdue = [w for w in self._work.values() if w.deadline is not None and now >= w.deadline and not w.expired]
        for work in overdue:
            if work.task is not None:
                work.expired = True
                work.task.cancel()
        return len(overdue)

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
            "stalled": self.stalled() if self._loop_task is not None else None,
            **self.stats,
        }


def _bounded(trail: list[Hop]) -> list[Hop]:
    """Cut long engine errors, so each hop stays within the room a hand-off has for it."""
    if all(h.error is None or len(h.error) <= MAX_HOP_ERROR_CHARS for h in trail):
        return trail
    return [msgspec.structs.replace(h, error=h.error[:MAX_HOP_ERROR_CHARS]) if h.error and len(h.error) > MAX_HOP_ERROR_CHARS else h
            for h in trail]
