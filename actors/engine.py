"""The engine protocol: the one small interface every model backend implements.

An agent never talks to a model directly. It builds an `EngineRequest` (prompt, scenario
instruction, whether a reject is allowed) and gets back an `EngineResult` (text, token counts,
optionally a probability-like confidence). Deciding answer-or-reject from that result is the
agent's job (`decision.py`), not the engine's, so every backend gets the same semantics.

Backends register by name (RouteLLM-style registry). A registration is a dotted path, resolved
lazily, so a topology that only uses replay agents never imports vLLM.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import msgspec

from disrouter.actors.contracts import Decision
from disrouter.actors.errors import UnknownEngine


class EngineRequest(msgspec.Struct, omit_defaults=True):
    query_id: str
    prompt: str
    alpha: float
    # The scenario instruction the agent puts in front of the prompt (the paper prompts the
    # model with its scenario so one trained agent serves all of them).
    instruction: str | None = None
    # False for a terminal agent: it must answer, so the engine should not offer the reject.
    allow_reject: bool = True
    # Ask for a probability-like signal (first-token / answer log-probs) when the engine can.
    want_confidence: bool = False
    # Stop generating as soon as the reply is decided to be a reject (cheap rejects).
    stop_on_reject: bool = True
    # With the reject offered: reject iff the probability that the reply opens with it is at
    # least this, read at the first step (engines with `reject_probability`); otherwise the
    # reply is the likeliest answer that does not open with it. None: the reply decides.
    reject_at: float | None = None
    # Stop once the marked final answer line ("The answer is: X") is complete.
    stop_on_answer: bool = True
    max_tokens: int | None = None


class EngineResult(msgspec.Struct, omit_defaults=True):
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    # The engine's own probability that its answer is right, when it has one.
    confidence: float | None = None
    # A decision the engine already knows (a replay trace's recorded self-assessment, or a
    # streaming engine that stopped on the reject phrase); the agent still applies its rules.
    decision: Decision | None = None
    # Dollars, when the engine knows its own prices (remote APIs).
    cost_usd: float | None = None
    stopped_early: bool = False
    # The probability that the reply opens with the reject, when the engine read it at the
    # first step to decide (`reject_at`): why a query was kept or handed on.
    reject_probability: float | None = None


@runtime_checkable
class Engine(Protocol):
    """What the agent needs from a model backend."""

    # Whether `generate` returns a confidence when asked (`want_confidence`): an agent in
    # confidence mode refuses to start on an engine that cannot (it would answer everything).
    provides_confidence: bool

    async def start(self) -> None:
        """Load weights / open connections. Called once per replica before consuming."""

    async def generate(self, request: EngineRequest) -> EngineResult:
        """Produce one reply. Must be safe to call concurrently (agents batch in flight).

        An engine that streams says so with `streams_text = True` and then also takes
        `generate(request, on_text=sink)`: it calls `sink(text_so_far)` as the reply grows (the
        agent relays it to a client that asked for streaming, `streaming.py`). The sink never
        blocks nor raises; the returned result stays the whole reply."""

    async def close(self) -> None:
        """Release what `start` took."""


_REGISTRY: dict[str, str] = {
    "replay": "disrouter.actors.engines.replay:ReplayEngine",
    "vllm": "disrouter.actors.engines.vllm:VLLMEngine",
    "openai": "disrouter.actors.engines.remote:OpenAIEngine",
}


def engine_types() -> list[str]:
    return sorted(_REGISTRY)


def engine_class(name: str) -> Any:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UnknownEngine(
            f"unknown engine type {name!r}; registered: {', '.join(engine_types())}"
        ) from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def build_engine(spec: dict[str, Any], *, agent: str) -> Engine:
    """Instantiate the engine a topology's `engine:` mapping describes.

    Every engine class takes `from_options(agent=..., **options)` so it can validate its own
    options and name the bad one.
    """
    options = dict(spec)
    kind = options.pop("type", None)
    if not kind:
        raise UnknownEngine(f"agent {agent!r}: engine needs a 'type' (one of {', '.join(engine_types())})")
    return engine_class(kind).from_options(agent=agent, **options)
