"""A client of a deployed topology: produce queries, get their answers back by query id.

Replies are matched by correlation id (the query id), faust-style: one consumer reads the
answers topic from its end, and each pending `ask` waits on a future keyed by its id. Answers
may arrive twice (at-least-once); the first one wins and later copies are ignored.

A long-lived client (the HTTP gateway holds thousands of waits) stays bounded: every future
has a deadline and leaves the pending table when it resolves, times out or is cancelled, and
the ids remembered for spotting late copies are the most recent `remember` only.

A client writes `<ns>.ingress`. A trusted tool that holds the topology's trust key (the live
evaluation's forced phase) may also write straight to an agent's topic: the client signs those
hand-offs (`trust.py`); without the key it refuses to send them, as the agent would refuse them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Callable

import msgspec
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from disrouter.actors import topics
from disrouter.actors.batching import BatchSender
from disrouter.actors.boundary import signed_query
from disrouter.actors.config import KafkaSpec, TrustSpec
from disrouter.actors.contracts import AGENT_ONLY_FIELDS, Answer, Chunk, Query
from disrouter.actors.kafka import GapGuard, ensure_topics, make_consumer, make_producer
from disrouter.actors.trust import TrustKeyError, TrustKeys

_DEFAULTS = Query(prompt="-")

# How many finished ids a client remembers to count late copies as duplicates (not as strangers).
DEFAULT_REMEMBER = 65_536
# How long a query's produce may wait for the broker's acknowledgement: aiokafka's own request
# timeout, which bounded the client's sends before they were batched.
SEND_TIMEOUT_S = 40.0


class Client:
    def __init__(
        self,
        bootstrap: str,
        namespace: str,
        *,
        answers_topic: str | None = None,
        trust_keys: TrustKeys | None = None,
        kafka: KafkaSpec | None = None,
        remember: int = DEFAULT_REMEMBER,
        connect_timeout_s: float = 60.0,
        stream: bool = False,
    ) -> None:
        # `kafka` carries TLS/SASL settings for a secured cluster; `bootstrap` wins over its address.
        self.spec = msgspec.structs.replace(kafka, bootstrap_servers=bootstrap) if kafka else KafkaSpec(bootstrap_servers=bootstrap)
        self.namespace = namespace
        # Needed only to write agent topics; by default the key of the default trust spec
        # ($DISROUTER_TRUST_KEY), when this process has it.
        self.trust_keys = trust_keys
        self.answers_topic = answers_topic or topics.answers(namespace)
        # `stream`: also read `<ns>.stream`, so a query sent with `on_chunk` gets its answer's
        # text while the answering agent generates it (`ask(..., on_chunk=…)`).
        self.stream_topic = topics.stream(namespace) if stream else None
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        self._listeners: dict[str, Callable[[Chunk], None]] = {}
        # Insertion-ordered and capped at `remember`: the oldest ids are forgotten first.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._connect_timeout_s = connect_timeout_s
        # Extra copies of answers (at-least-once delivery), or answers after their ask timed out.
        self.duplicates = 0
        # Partitions read again from the start because the broker lost their log.
        self.rewinds = 0
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Answer)
        self._chunk_decoder = msgspec.json.Decoder(Chunk)
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> Client:
        read = [self.answers_topic, *([self.stream_topic] if self.stream_topic else [])]
        await ensure_topics(self.spec, [topics.ingress(self.namespace), *read])
        self._producer = make_producer(self.spec)
        # Queries sent together share produce batches (`batching.py`): one future and one timer
        # per batch, not per query.
        self._sender = BatchSender(self._producer, SEND_TIMEOUT_S)
        # No group: this client reads every partition from the end, so it sees only answers to
        # queries it is about to send, and never steals partitions from another reader.
        self._consumer = make_consumer(self.spec, group_id=None, auto_offset_reset="latest")
        await self._producer.start()
        await self._consumer.start()
        tps = [TopicPartition(topic, p) for topic in read for p in sorted(await self._partitions(topic))]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before any query is produced
            await self._consumer.position(tp)
        # Answers a broker serves out of order are read again, not skipped (`GapGuard`).
        self._gaps = GapGuard(self._consumer)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _partitions(self, topic: str) -> set[int]:
        """The topic's partitions, through the producer's public metadata wait; a topic that
        just got created may take a few metadata rounds to show up, but not forever."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                while True:
                    try:
                        parts = await self._producer.partitions_for(topic)
                    except KafkaError:
                        parts = set()
                    if parts:
                        return set(parts)
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise TimeoutError(f"no partitions of {topic!r} after {self._connect_timeout_s:g} s "
                               f"(is the broker at {self.spec.bootstrap_servers} up?)") from None

    @property
    def pending(self) -> int:
        """Queries sent and still waiting for their answer."""
        return len(self._pending)

    async def __aexit__(self, *exc: object) -> None:
        if self._reader:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for future in list(self._pending.values()):
            future.cancel()
        await self._consumer.stop()
        await self._producer.stop()

    async def _read(self) -> None:
        while True:
            batches = self._gaps.check(await self._consumer.getmany(timeout_ms=200))
            await self._rewind_restarted_partitions(set(batches))
            for records in batches.values():
                for record in records:
                    if record.topic == self.stream_topic:
                        self._chunk(record.value)
                        continue
                    try:
                        answer = self._decoder.decode(record.value)
                    except msgspec.DecodeError:
                        continue  # not ours to judge: another writer's bad message
                    future = self._pending.get(answer.id)
                    if future is not None and not future.done():
                        future.set_result(answer)
                        # Now, not a loop turn later in the done callback: a caller that
                        # awaits several already-answered futures never yields in between.
                        self._forget(answer.id, future)
                    elif future is not None or answer.id in self._finished:
                        self.duplicates += 1

    def _chunk(self, value: bytes | None) -> None:
        try:
            chunk = self._chunk_decoder.decode(value or b"")
        except msgspec.DecodeError:
            return
        listener = self._listeners.get(chunk.id)
        if listener is not None:
            listener(chunk)

    async def _rewind_restarted_partitions(self, fetched: set[TopicPartition]) -> None:
        """A broker that lost its log (a memory broker restarted, a topic recreated) starts the
        answers topic again at offset 0, below this reader's position: the broker then returns
        nothing, not an error, and every answer up to the old position would be missed. Reading
        past the partition's end is that signal; the answers there are all new, so read them
        from the beginning."""
        for tp in self._consumer.assignment() - fetched:
            end = self._consumer.highwater(tp)
            if end is not None and await self._consumer.position(tp) > end:
                self.rewinds += 1
                await self._consumer.seek_to_beginning(tp)
                self._gaps.forget([tp])

    def _forget(self, query_id: str, future: asyncio.Future[Answer]) -> None:
        """A future is done (answered, timed out, cancelled): it leaves the pending table, and
        its id is remembered (bounded) so a late copy counts as a duplicate."""
        if self._pending.get(query_id) is future:
            del self._pending[query_id]
            self._listeners.pop(query_id, None)
        self._finished[query_id] = None
        self._finished.move_to_end(query_id)
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)
        if not future.cancelled():
            future.exception()  # retrieved: a timed-out future nobody awaited is no error to report

    def _keys(self) -> TrustKeys:
        if self.trust_keys is None:
            try:
                self.trust_keys = TrustKeys.load(TrustSpec())
            except TrustKeyError as exc:
                raise TrustKeyError(f"writing an agent's topic needs the topology's trust key: {exc}") from None
        return self.trust_keys

    async def submit(self, query: Query, topic: str | None = None, timeout_s: float = 120.0,
                     on_chunk: Callable[[Chunk], None] | None = None) -> asyncio.Future[Answer]:
        """Produce a query (to the ingress, or, signed, straight to an agent's topic); returns a
        future resolved with its answer, or failed with TimeoutError after `timeout_s`.

        `on_chunk` (a client made with `stream=True`): called with each `Chunk` of the answer's
        text read while the query is pending; the query is sent with `stream` set. Chunks are
        best effort (`client/stream.py` puts them together); the answer is the whole text.

        Cancelling the future gives up the wait; either way it leaves the pending table, so a
        future nobody awaits costs nothing after its deadline."""
        if query.id is None:
            query.id = f"q-{uuid.uuid4().hex[:12]}"
        if on_chunk is not None:
            if self.stream_topic is None:
                raise ValueError("`on_chunk` needs a client made with stream=True (it reads the stream topic)")
            query.stream = True
        topic = topic or topics.ingress(self.namespace)
        if topic == topics.ingress(self.namespace):
            # The entry agent dead-letters these; say so here instead of timing out later.
            for field in AGENT_ONLY_FIELDS:
                if getattr(query, field) != getattr(_DEFAULTS, field):
                    raise ValueError(f"`{field}` is written by agents only; send it signed to an agent's topic, not to {topic}")
            key, value, headers = query.id.encode(), self._encoder.encode(query), None
        else:
            key, value, headers = signed_query(self._keys(), topic, query, self._encoder)
        query_id = query.id
        if query_id in self._pending:
            raise ValueError(f"query id {query_id!r} is already waiting for its answer")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._pending[query_id] = future
        if on_chunk is not None:
            self._listeners[query_id] = on_chunk
        deadline = loop.call_later(timeout_s, _expire, future, query_id, timeout_s)

        def done(f: asyncio.Future[Answer]) -> None:
            deadline.cancel()
            self._forget(query_id, f)

        future.add_done_callback(done)
        try:
            await self._sender.send(topic, value, key, headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def ask(self, query: Query, timeout_s: float = 120.0, topic: str | None = None,
                  on_chunk: Callable[[Chunk], None] | None = None) -> Answer:
        """Produce a query and wait for its answer; raises TimeoutError after `timeout_s`."""
        future = await self.submit(query, topic, timeout_s, on_chunk)
        try:
            return await future
        finally:
            future.cancel()  # a cancelled ask gives up its wait (a no-op once answered)


def _expire(future: asyncio.Future[Answer], query_id: str, timeout_s: float) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no answer to {query_id!r} within {timeout_s:g} s"))
