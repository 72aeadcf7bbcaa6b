"""Streaming an answer's text while it is generated: best effort, beside the at-least-once path.

A query that asks for it (`Query.stream`, set by the gateway for `stream: true`) has its
answering agent publish the reply's text as `Chunk`s to `<ns>.stream`, keyed by the query id:

    engine ─(text so far)─► ReleaseGate ─(only once certain to be an answer)─► ChunkPublisher ─► <ns>.stream

- `ReleaseGate` (the agent's side) lets text through only once the agent's decision is certain
  to be an answer: at once where the agent must answer (terminal, forced), in generative mode as
  soon as the reply can no longer be the reject phrase (`decision.classify_prefix`: the first
  tokens), never in confidence mode where the agent may still reject (it decides from the whole
  reply's confidence). A reject's tokens are never published.
- `ChunkPublisher` (the worker's side) never blocks nor fails the hop: `offer` only records the
  text; one background task per query sends what is new, one chunk at a time (text that arrives
  meanwhile is coalesced into the next chunk), each send bounded. A failed send is logged and
  counted (`stream_failed`) and retried as part of the next chunk, from the last offset the
  broker acknowledged; after `MAX_FAILURES` the query stops streaming. Closing it cancels what
  is left: the `Answer`, published as always, is the whole text, and readers take what they
  have not yet got from it (`client/stream.py`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable

import msgspec
import structlog
from aiokafka import AIOKafkaProducer

from disrouter.actors.contracts import Chunk
from disrouter.actors.decision import PrefixState, classify_prefix

log = structlog.get_logger("disrouter.streaming")

TextSink = Callable[[str], None]  # called with the reply's text so far; must neither block nor raise

MAX_FAILURES = 3


class ReleaseGate:
    """Passes the reply's text so far to `sink` once the agent is certain to answer with it."""

    def __init__(self, sink: TextSink, *, certain: bool) -> None:
        self.sink = sink
        self.open = certain

    def __call__(self, text: str) -> None:
        if not self.open:
            if classify_prefix(text) is not PrefixState.ANSWER:
                return
            self.open = True
        self.sink(text)


class ChunkPublisher:
    """Publishes one query's released text as chunks, in the background, bounded."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, query_id: str, agent: str, stats: Counter[str],
                 send_timeout_s: float = 2.0) -> None:
        self.producer = producer
        self.topic = topic
        self.key = query_id.encode()
        self.query_id = query_id
        self.agent = agent
        self.stats = stats
        self.send_timeout_s = send_timeout_s
        self.run = uuid.uuid4().hex[:12]
        self.released = ""  # the text offered so far
        self.acked = 0  # characters of it the broker has acknowledged
        self.failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        self._encoder = msgspec.json.Encoder()

    def offer(self, text: str) -> None:
        """The reply so far (it only grows). Never blocks, never raises."""
        if self._closed or (self._task is not None and self._task.done()):
            return  # closed, or gave up
        if self.released.startswith(text):
            return  # nothing new (a retried engine call catching up with what was released)
        if not text.startswith(self.released):
            # A retried engine call that says something else: what was sent cannot be taken
            # back, so stop here; the Answer has the text.
            log.warning("stream_diverged", query_id=self.query_id, agent=self.agent, sent_chars=len(self.released))
            self.stats["stream_diverged"] += 1
            self.close()
            return
        self.released = text
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._send_loop(), name=f"stream-{self.query_id}")

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            end = len(self.released)
            if end <= self.acked:
                continue
            chunk = Chunk(id=self.query_id, run=self.run, offset=self.acked, text=self.released[self.acked:end], agent=self.agent)
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    await self.producer.send_and_wait(self.topic, self._encoder.encode(chunk), key=self.key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a chunk is best effort: count, log, go on
                self.failures += 1
                self.stats["stream_failed"] += 1
                log.warning("stream_publish_failed", query_id=self.query_id, agent=self.agent, topic=self.topic,
                            error=f"{type(exc).__name__}: {exc}", failures=self.failures)
                if self.failures >= MAX_FAILURES:
                    return  # the Answer still carries the text
                self._wake.set()  # resend from the acknowledged offset with what came since
                continue
            self.acked = end
            self.stats["stream_chunks"] += 1

    def close(self) -> None:
        """The hop is over: what is not yet sent is left to the Answer."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
