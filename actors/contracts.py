"""Wire contracts: the typed structs that cross every boundary (Kafka, engines, traces).

Everything on the wire is JSON encoded with msgspec. Decoding is strict (unknown fields are
rejected by `forbid_unknown_fields`, types are not coerced) so a malformed message is caught at
the edge and sent to the dead-letter topic instead of failing deep inside an agent.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import msgspec


class Scenario(str, enum.Enum):
    """The paper's three cost scenarios; each fixes the cost weight α."""

    performance_first = "performance_first"
    balance = "balance"
    cost_first = "cost_first"

    @property
    def alpha(self) -> float:
        return SCENARIO_ALPHA[self]


SCENARIO_ALPHA: dict[Scenario, float] = {
    Scenario.performance_first: 0.2,
    Scenario.balance: 0.5,
    Scenario.cost_first: 0.8,
}

Decision = Literal["answer", "reject"]


class Hop(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One agent's visit to a query: what it decided and what that cost."""

    agent: str
    decision: Decision
    latency_ms: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0  # the agent's normalised cost (the paper's metric)
    cost_usd: float | None = None  # dollars, when the agent has prices
    confidence: float | None = None
    forced: bool = False  # a terminal agent answered although it would have rejected
    error: str | None = None  # the engine failed; the query was passed on instead of lost


class Query(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An ingress query, and the same struct travelling between agents after rejects.

    Only `prompt` is required. The fields split along the trust boundary (`boundary.py`):
    a client sets the first group on `<ns>.ingress`; the second group is written by agents
    only, travels signed on agent topics, and is refused (dead-lettered) on ingress.
    """

    # --- what a client may set on ingress --------------------------------------------------
    prompt: str
    id: str | None = None
    scenario: Scenario | None = None
    alpha: float | None = None
    reply_to: str | None = None  # a topic the topology allows (default: `<ns>.` but not internal ones)
    max_hops: int | None = None  # may lower the topology's bound, never raise it
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    # Ask the answering agent to publish its reply's text as it is generated, as `Chunk`s on
    # `<ns>.stream` (where its engine streams); the `Answer` still ends the query.
    stream: bool = False
    # --- written by agents (and trusted tools holding the trust key) only -----------------
    # The receiving agent must answer (as if it were terminal): how every agent's own answer
    # to every question is recorded for baselines and the oracle (`disrouter eval --forced-alone`).
    force_answer: bool = False
    # The hops so far, so any agent downstream (and the final answer) sees the whole path
    # without a central router; visited agents, `forced` and the totals all derive from it.
    trail: list[Hop] = []

    def visited(self) -> set[str]:
        return {hop.agent for hop in self.trail}


# Query fields only agents write: a client that sets one on ingress is dead-lettered.
AGENT_ONLY_FIELDS = ("force_answer", "trail")


class Totals(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Cumulative view over the trail: every agent that ran, rejects included."""

    hops: int = 0
    latency_ms: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    cost_usd: float | None = None

    @classmethod
    def of(cls, trail: list[Hop]) -> Totals:
        dollars = [h.cost_usd for h in trail if h.cost_usd is not None]
        return cls(
            hops=len(trail),
            latency_ms=round(sum(h.latency_ms for h in trail), 3),
            tokens_in=sum(h.tokens_in for h in trail),
            tokens_out=sum(h.tokens_out for h in trail),
            cost=round(sum(h.cost for h in trail), 6),
            cost_usd=sum(dollars) if dollars else None,
        )


AnswerStatus = Literal["answered", "unanswered"]


class Answer(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The final outcome of a query: who answered, what, and the whole trail.

    `status="unanswered"` (with `reason`) is the defined outcome when a query runs out of
    candidates or hops without reaching an agent that answers; it is never silently dropped.
    `cost` is the normalised cost of the agent that answered (the paper's metric); `totals`
    is the cumulative view.
    """

    id: str
    status: AnswerStatus
    alpha: float
    answer: str | None = None
    agent: str | None = None
    scenario: Scenario | None = None
    forced: bool = False
    cost: float = 0.0
    reason: str | None = None
    trail: list[Hop] = []
    totals: Totals = msgspec.field(default_factory=Totals)
    tags: list[str] = []
    metadata: dict[str, Any] = {}


class Chunk(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A piece of an answer's text on its way (`<ns>.stream`, keyed by query id), published by
    the answering agent of a query that asked for `stream` once its decision is certain to be an
    answer. Best effort: chunks may be lost, repeated or reordered; `offset` (characters of the
    reply before `text`) lets a reader keep only what extends what it has, and the `Answer` on
    the answers topic stays the whole, authoritative text. `run` tells apart two runs of the
    same query (a redelivery), whose texts need not agree."""

    id: str
    run: str
    offset: int
    text: str
    agent: str | None = None


class DeadLetter(msgspec.Struct, omit_defaults=True):
    """A message an agent could not process or publish, with why and where it came from.

    `topic`/`partition`/`offset` locate the consumed record. The raw value is kept as text, or
    base64 when not UTF-8. A value too large to fit a dead letter is cut (`value_truncated`,
    with `value_bytes` the original size): the record itself stays at its offset in `topic`
    for as long as the topic keeps it. When publishing an outcome failed, `destination` names
    where it was going and `value` holds the outcome instead of the consumed record.
    """

    reason: str
    agent: str
    topic: str
    partition: int
    offset: int
    value: str
    value_encoding: Literal["utf-8", "base64"] = "utf-8"
    key: str | None = None
    error_type: str = "decode"
    timestamp_ms: int | None = None
    value_truncated: bool = False
    value_bytes: int | None = None
    destination: str | None = None
