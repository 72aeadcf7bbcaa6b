"""The replay engine: serves recorded outcomes from a replay trace instead of running a model.

It is what the fabric benchmark (`bench/fabric.py`), tests and the evaluation harness
drive, so a request is one dict lookup (plus an optional simulated latency). A recorded self-assessment (`decision: reject`)
comes back as the paper's reject phrase, exactly as a trained model would say it, so the agent's
generative parser handles replay and real models alike; `confidence` feeds confidence mode.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Literal

import msgspec

from disrouter.actors.decision import REJECT_PHRASE
from disrouter.actors.engine import EngineRequest, EngineResult
from disrouter.actors.engines.prompting import offers_reject
from disrouter.actors.errors import EngineError
from disrouter.actors.resources import resolve_path
from disrouter.actors.trace import TraceRecord, read_trace


class ReplayOptions(msgspec.Struct, forbid_unknown_fields=True):
    # A path, or "pkg:<package>/<file>" for a trace shipped inside a Python package.
    trace: str
    # Which agent's lines to serve (default: the topology agent's own name).
    trace_agent: str | None = None
    # Sleep for the recorded latency × scale, to make fabric benchmarks realistic.
    simulate_latency: bool = False
    latency_scale: float = 1.0
    # A query the trace does not know: reject it (pass it on) or fail the request.
    on_missing: Literal["reject", "error"] = "reject"
    # Append one line per call (`start|done|cancelled <agent> <query id> <pid>`) to this file:
    # how tests and benchmarks count engine work across replicas (duplicates, cancellations).
    call_log: str | None = None
    # Stream the reply in pieces of this many characters (0: no streaming), one piece every
    # `stream_delay_ms`: a deterministic streaming engine for tests and demos of the gateway.
    stream_chars: int = 0
    stream_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.stream_chars < 0 or self.stream_delay_ms < 0:
            raise ValueError("stream_chars and stream_delay_ms must be ≥ 0")


def _render(record: TraceRecord) -> str:
    if record.answer is not None:
        return record.answer
    # Traces need not carry answer text; say what is known rather than invent an answer.
    return f"[replay {record.agent}: {'correct' if record.correct else 'incorrect'}]"


class ReplayEngine:
    def __init__(self, agent: str, options: ReplayOptions) -> None:
        self.agent = agent
        self.options = options
        self._by_id: dict[str, TraceRecord] = {}
        self._by_prompt: dict[str, TraceRecord] = {}
        # Known once the trace is read: a confidence on every line of this agent.
        self.provides_confidence = False
        self._call_log: int | None = None
        self.streams_text = options.stream_chars > 0

    @classmethod
    def from_options(cls, *, agent: str, **options: object) -> ReplayEngine:
        try:
            opts = msgspec.convert(options, ReplayOptions)
        except msgspec.ValidationError as exc:
            raise EngineError(f"agent {agent!r}: replay engine options: {exc}") from None
        return cls(agent, opts)

    async def start(self) -> None:
        path = resolve_path(self.options.trace)
        if not path.is_file():
            raise EngineError(f"agent {self.agent!r}: replay trace {str(path)!r} does not exist")
        wanted = self.options.trace_agent or self.agent
        records = await asyncio.to_thread(read_trace, path)
        for record in records:
            if record.agent != wanted:
                continue
            self._by_id[record.query_id] = record
            if record.prompt:
                self._by_prompt.setdefault(record.prompt, record)
        if not self._by_id:
            raise EngineError(f"agent {self.agent!r}: trace {str(path)!r} has no lines for agent {wanted!r}")
        self.provides_confidence = all(r.confidence is not None for r in self._by_id.values())
        if self.options.call_log:
            # O_APPEND: each short line lands whole, even with several replicas writing.
            self._call_log = os.open(self.options.call_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _log_call(self, event: str, request: EngineRequest) -> None:
        if self._call_log is not None:
            os.write(self._call_log, f"{event} {self.agent} {request.query_id} {os.getpid()}\n".encode())

    def lookup(self, request: EngineRequest) -> TraceRecord | None:
        return self._by_id.get(request.query_id) or self._by_prompt.get(request.prompt)

    async def generate(self, request: EngineRequest, on_text: Callable[[str], None] | None = None) -> EngineResult:
        self._log_call("start", request)
        try:
            result = await self._generate(request)
            if on_text is not None and self.streams_text:
                await self._stream(result.text, on_text)
        except asyncio.CancelledError:
            self._log_call("cancelled", request)
            raise
        self._log_call("done", request)
        return result

    async def _stream(self, text: str, on_text: Callable[[str], None]) -> None:
        """Say the reply again piece by piece, as a streaming model would (the result is the same)."""
        step = self.options.stream_chars
        for end in range(step, len(text) + step, step):
            on_text(text[:end])
            if self.options.stream_delay_ms and end < len(text):
                await asyncio.sleep(self.options.stream_delay_ms / 1000.0)

    async def _generate(self, request: EngineRequest) -> EngineResult:
        record = self.lookup(request)
        if record is None:
            if self.options.on_missing == "error":
                raise EngineError(f"query {request.query_id!r} is not in the trace of {self.agent!r}")
            return EngineResult(text=REJECT_PHRASE, confidence=0.0, decision="reject")
        if self.options.simulate_latency and record.latency_ms:
            await asyncio.sleep(record.latency_ms * self.options.latency_scale / 1000.0)
        # Say the reject phrase only where a model's prompt offers it: not at a terminal agent,
        # and not in confidence mode, where the agent decides from the probability and needs
        # the answer text (as a live model, asked to always answer, would give it).
        rejects = record.decision == "reject" and offers_reject(request)
        return EngineResult(
            text=REJECT_PHRASE if rejects else _render(record),
            tokens_in=record.tokens_in or 0,
            tokens_out=record.tokens_out or 0,
            confidence=record.confidence,
            decision=record.decision,
            cost_usd=record.cost_usd,
        )

    async def close(self) -> None:
        self._by_id.clear()
        self._by_prompt.clear()
        if self._call_log is not None:
            os.close(self._call_log)
            self._call_log = None
