"""Chat completions served by a DiSRouter network: an OpenAI request becomes a `Query` on the
ingress topic and its `Answer` comes back by correlation id (`client/sdk.py`).

Free of HTTP: `app.py` routes requests here and turns `GatewayError` into OpenAI-style errors.
The model name picks the network (topology) and the scenario: `disrouter` uses the topology's
default scenario, and `disrouter-performance-first`, `disrouter-balance`, `disrouter-cost-first`
set one. A gateway may front several topologies, each under its own model id (`networks`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import msgspec
import structlog

from disrouter.actors.config import KafkaSpec
from disrouter.actors.contracts import Answer, Chunk, Query, Scenario
from disrouter.client.sdk import Client
from disrouter.client.stream import TextAssembler
from disrouter.gateway.metrics import GatewayMetrics
from disrouter.gateway.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    ErrorDetail,
    ErrorResponse,
    Model,
    ModelList,
    Trail,
    Usage,
    encode,
)

log = structlog.get_logger("disrouter.gateway")


class Network(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One topology the gateway fronts: its namespace and the model id that selects it."""

    namespace: str
    model: str | None = None  # default: the namespace
    kafka: KafkaSpec | None = None  # default: the gateway's


class GatewaySpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The gateway application's `args:`: which networks it fronts and how long it waits.

    One network: `namespace` (model id `model`, default "disrouter"). Several topologies behind
    one endpoint: `networks`, each selected by its own model id. Every model id also comes with
    one per scenario: `<model>-performance-first`, `<model>-balance`, `<model>-cost-first`.
    """

    namespace: str | None = None
    kafka: KafkaSpec = msgspec.field(default_factory=KafkaSpec)
    model: str = "disrouter"
    networks: list[Network] = []
    timeout_s: float = 300.0  # an answer later than this is a 504 (the query may still finish)
    replicas: int = 1
    ray_actor_options: dict = {}

    def all_networks(self) -> list[Network]:
        own = [Network(self.namespace, self.model)] if self.namespace else []
        networks = [*own, *self.networks]
        if not networks:
            raise ValueError("the gateway needs `namespace` or `networks`")
        return networks


class GatewayError(Exception):
    """An OpenAI-style error: HTTP status, `type`, `code`, message."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(ErrorDetail(message=message, type=type_, code=code, param=param))


def prompt_of(messages: list[ChatMessage]) -> str:
    """One prompt for the agents: the last user message alone when it is the whole
    conversation (what the agents were trained on), else the conversation as a transcript."""
    if not messages:
        raise GatewayError(400, "`messages` must not be empty", "invalid_request_error", "invalid_messages", "messages")
    if messages[-1].role != "user":
        raise GatewayError(400, "the last message must be the user's", "invalid_request_error", "invalid_messages", "messages")
    if len(messages) == 1:
        return messages[0].text()
    return "\n\n".join(f"{m.role.capitalize()}: {m.text()}" for m in messages) + "\n\nAssistant:"


class ChatService:
    def __init__(self, spec: GatewaySpec, metrics: GatewayMetrics | None = None) -> None:
        self.spec = spec
        self.metrics = metrics
        # One Client (one reply consumer, futures by id) per network; a model id picks the
        # network and, with a scenario suffix, the scenario.
        self.clients: dict[str, Client] = {}
        self.models: dict[str, tuple[str, Scenario | None]] = {}
        for network in spec.all_networks():
            kafka = network.kafka or spec.kafka
            self.clients[network.namespace] = Client(kafka.bootstrap_servers, network.namespace, kafka=kafka, stream=True)
            model = network.model or network.namespace
            for name, scenario in [(model, None), *((f"{model}-{s.value.replace('_', '-')}", s) for s in Scenario)]:
                if name in self.models:
                    raise ValueError(f"two networks share the model id {name!r}")
                self.models[name] = (network.namespace, scenario)

    async def start(self) -> None:
        for client in self.clients.values():
            await client.__aenter__()

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.__aexit__(None, None, None)

    @property
    def pending(self) -> int:
        return sum(c.pending for c in self.clients.values())

    @property
    def duplicates(self) -> int:
        return sum(c.duplicates for c in self.clients.values())

    def list_models(self) -> ModelList:
        return ModelList([Model(name) for name in self.models])

    def network_of(self, request: ChatCompletionRequest) -> tuple[Client, Scenario | None]:
        name = request.model.replace("_", "-")
        if name not in self.models:
            raise GatewayError(404, f"the model {request.model!r} does not exist; this gateway serves {sorted(self.models)}",
                               "invalid_request_error", "model_not_found", "model")
        namespace, scenario = self.models[name]
        return self.clients[namespace], scenario

    def query_of(self, request: ChatCompletionRequest, scenario: Scenario | None) -> Query:
        options = request.disrouter
        metadata: dict = dict(request.metadata or {})
        if request.user:
            metadata["user"] = request.user
        return Query(
            id=f"chatcmpl-{uuid.uuid4().hex[:20]}",
            prompt=prompt_of(request.messages),
            scenario=scenario,
            alpha=options.alpha if options else None,
            tags=list(options.tags) if options else [],
            max_hops=options.max_hops if options else None,
            metadata=metadata,
        )

    def timeout_of(self, request: ChatCompletionRequest) -> float:
        asked = request.disrouter.timeout_s if request.disrouter else None
        return min(asked, self.spec.timeout_s) if asked and asked > 0 else self.spec.timeout_s

    async def _answer(self, client: Client, query: Query, timeout_s: float, model: str,
                      on_chunk: Callable[[Chunk], None] | None = None) -> Answer:
        bound = log.bind(query_id=query.id, model=model, namespace=client.namespace)
        started = time.perf_counter()
        try:
            answer = await client.ask(query, timeout_s, on_chunk=on_chunk)
        except TimeoutError:
            bound.warning("gateway_timeout", timeout_s=timeout_s)
            self._observe(client, model, "timeout")
            raise GatewayError(504, f"no answer from the DiSRouter network within {timeout_s:g} s",
                               "timeout", "timeout") from None
        except asyncio.CancelledError:
            bound.info("gateway_cancelled")  # the HTTP client went away: so does the wait
            self._observe(client, model, "cancelled")
            raise
        latency_ms = round((time.perf_counter() - started) * 1000.0, 3)
        bound.info("gateway_answer", status=answer.status, agent=answer.agent, hops=answer.totals.hops, latency_ms=latency_ms)
        if answer.status != "answered":
            self._observe(client, model, "unanswered", latency_ms, answer.totals.hops)
            raise GatewayError(502, f"no agent answered: {answer.reason}", "unanswered", "unanswered")
        self._observe(client, model, "ok", latency_ms, answer.totals.hops)
        return answer

    def _observe(self, client: Client, model: str, outcome: str, latency_ms: float | None = None, hops: int | None = None) -> None:
        if self.metrics is not None:
            self.metrics.request(client.namespace, model, outcome, latency_ms, hops)

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletion:
        client, scenario = self.network_of(request)
        query = self.query_of(request, scenario)
        answer = await self._answer(client, query, self.timeout_of(request), request.model)
        return ChatCompletion(
            id=answer.id,
            model=request.model,
            choices=[Choice(0, AssistantMessage(content=answer.answer))],
            usage=Usage.of(answer.totals),
            disrouter=trail_of(answer),
        )

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[bytes]:
        """Server-sent events: the role at once, the answer's text as the answering agent
        generates it (where its engine streams), then the rest of the answer, usage and the trail.

        The query asks the network to stream (`Query.stream`): the answering agent publishes its
        text as chunks to `<ns>.stream` once it is certain to answer, and the reply consumer hands
        them here by query id. Chunks are best effort; the Answer ends the stream and is the
        source of truth: its last delta is whatever of it the client has not yet got.
        """
        client, scenario = self.network_of(request)  # a bad request fails before the stream starts
        query = self.query_of(request, scenario)
        assert query.id is not None
        created = int(time.time())

        def chunk(delta: Delta, finish: str | None = None, **extra) -> bytes:
            body = ChatCompletionChunk(id=query.id or "", model=request.model, created=created,
                                       choices=[ChunkChoice(0, delta, finish)], **extra)
            return b"data: " + encode(body) + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            yield chunk(Delta(role="assistant", content=""))
            text = TextAssembler()
            deltas: asyncio.Queue[str] = asyncio.Queue()

            def on_chunk(piece: Chunk) -> None:
                new = text.feed(piece)
                if new:
                    deltas.put_nowait(new)

            waiting = asyncio.ensure_future(self._answer(client, query, self.timeout_of(request), request.model, on_chunk))
            getting: asyncio.Future[str] | None = None
            try:
                while not waiting.done():
                    if getting is None:
                        getting = asyncio.ensure_future(deltas.get())
                    await asyncio.wait({waiting, getting}, return_when=asyncio.FIRST_COMPLETED)
                    if getting.done():
                        yield chunk(Delta(content=getting.result()))
                        getting = None
                try:
                    answer = waiting.result()
                except GatewayError as exc:
                    yield b"data: " + encode(exc.body) + b"\n\n"
                    return
            finally:
                for pending in (waiting, getting):  # the client went away: so does the wait
                    if pending is not None and not pending.done():
                        pending.cancel()
            while not deltas.empty():  # what arrived with the answer, in order, before the rest
                yield chunk(Delta(content=deltas.get_nowait()))
            rest = text.finish(answer.answer or "")
            if text.diverged:
                log.warning("stream_diverged", query_id=query.id, streamed_chars=len(text.text), answer_chars=len(answer.answer or ""))
            if rest:
                yield chunk(Delta(content=rest))
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            trail = trail_of(answer)
            if text.diverged:  # the streamed text is not the answer's beginning: give the whole answer
                trail = msgspec.structs.replace(trail, answer=answer.answer)
            yield chunk(Delta(), "stop", usage=Usage.of(answer.totals) if include_usage else None, disrouter=trail)
            yield b"data: [DONE]\n\n"

        return events()


def trail_of(answer: Answer) -> Trail:
    return Trail(id=answer.id, status=answer.status, alpha=answer.alpha, agent=answer.agent,
                 scenario=answer.scenario.value if answer.scenario else None, forced=answer.forced,
                 cost=answer.cost, trail=answer.trail, totals=answer.totals)
