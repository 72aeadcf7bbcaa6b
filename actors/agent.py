"""One agent's handling of one query: prompt → engine → decision → outcome.

This is the routing brain of DiSRouter, free of Kafka so it reads (and tests) top to bottom:

1. resolve the query's α (its own α, its scenario, else the topology default);
2. pick the agent it would be passed to (policy over unvisited candidates, hop bound);
3. ask the engine, offering the reject only if there is somewhere to pass the query;
4. decide: generative (the reject phrase) or confidence ((1 − α)^γ threshold);
5. return an Outcome: forward the query with its trail, or a final Answer.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import structlog

from disrouter.actors.config import AgentConfig, Peer
from disrouter.actors.contracts import Answer, Hop, Query, Totals
from disrouter.actors.decision import confident_enough, is_reject, resolve_alpha, scenario_instruction
from disrouter.actors.engine import Engine, EngineRequest, EngineResult
from disrouter.actors.errors import EngineError
from disrouter.actors.routing import next_hop
from disrouter.actors.streaming import ReleaseGate, TextSink

log = structlog.get_logger("disrouter.agent")


class Forward(msgspec.Struct):
    """The agent rejected: publish `query` (trail extended) to `peer.topic`."""

    peer: Peer
    query: Query


class Final(msgspec.Struct):
    """The query is done here: publish `answer` to `topic`."""

    topic: str
    answer: Answer


Outcome = Forward | Final


class Agent:
    def __init__(self, config: AgentConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine

    def check_engine(self) -> None:
        """After the engine started: refuse a decision mode the engine cannot serve (a
        confidence-mode agent without a confidence would answer everything, blind)."""
        if self.config.awareness == "confidence" and not getattr(self.engine, "provides_confidence", False):
            raise EngineError(
                f"agent {self.config.name!r} has `awareness: confidence`, but its {type(self.engine).__name__} "
                "returns no confidence (a replay trace needs `confidence` on every line of the agent); "
                "use `awareness: generative` or an engine that reports one"
            )
        if self.config.reject_at is not None and not callable(getattr(self.engine, "reject_probability", None)):
            raise EngineError(
                f"agent {self.config.name!r} has `reject_at`, but its {type(self.engine).__name__} cannot read the "
                "reject's probability (the vLLM engine can); remove `reject_at` to let the reply decide"
            )

    def hop_budget(self, query: Query) -> int:
        """How many agents this query may visit in all (its own bound, capped by ours)."""
        bounds = [b for b in (query.max_hops, self.config.max_hops) if b is not None]
        return min(bounds) if bounds else self.config.limits.max_hops

    async def process(self, query: Query, on_text: TextSink | None = None) -> Outcome:
        """`on_text`: where the reply's text goes while it is generated, once this agent is
        certain to answer with it (a query that asked for streaming, an engine that streams)."""
        cfg = self.config
        bound = log.bind(query_id=query.id, agent=cfg.name, hop=len(query.trail) + 1)
        alpha, scenario = resolve_alpha(query.alpha, query.scenario, cfg.default_alpha)

        # Where a reject would go. Decided before generating so a query with nowhere to go is
        # never offered the reject (the paper's terminal agent always answers).
        peer = None
        exhausted_reason = None
        if cfg.terminal:
            pass
        elif len(query.trail) + 1 >= self.hop_budget(query):
            exhausted_reason = f"max_hops ({self.hop_budget(query)}) reached at {cfg.name!r}"
        else:
            peer = next_hop(cfg.policy, query, cfg.next)
            if peer is None:
                exhausted_reason = f"no unvisited candidate left after {cfg.name!r}"
        must_answer = cfg.terminal or query.force_answer or (peer is None and cfg.on_exhausted == "force")

        request = EngineRequest(
            query_id=query.id or "",
            prompt=query.prompt,
            alpha=alpha,
            instruction=scenario_instruction(alpha),
            allow_reject=not must_answer,
            want_confidence=cfg.awareness == "confidence",
            max_tokens=cfg.max_tokens,
            reject_at=cfg.reject_at_for(alpha) if not must_answer else None,
        )
        # Text is released only once the decision is certain to be an answer: from the start
        # where the agent must answer, after the first tokens in generative mode, never in
        # confidence mode (the confidence of the whole reply decides).
        gate = None
        if on_text is not None and getattr(self.engine, "streams_text", False) and (must_answer or cfg.awareness == "generative"):
            gate = ReleaseGate(on_text, certain=must_answer)
        started = time.perf_counter()
        result, error = await self._generate(request, bound, gate)
        latency_ms = round((time.perf_counter() - started) * 1000.0, 3)

        spent = result  # what the engine used, even on a reply the agent cannot use
        if result is not None and request.want_confidence and result.confidence is None and not must_answer:
            # Confidence mode with no confidence: this agent cannot judge the query, and its
            # prompt never offered the reject, so answering would be answering blind.
            result, error = None, "the engine returned no confidence (awareness: confidence)"
        if result is None:
            # The engine failed every retry (or could not judge): pass the query on, never drop
            # it. A forced query must not be passed on: it ends here as `unanswered`.
            hop = Hop(
                agent=cfg.name,
                decision="reject",
                latency_ms=latency_ms,
                tokens_in=spent.tokens_in if spent else 0,
                tokens_out=spent.tokens_out if spent else 0,
                cost=cfg.cost,
                cost_usd=self._dollars(spent) if spent else None,
                error=error,
            )
            forward_to = None if query.force_answer else peer
            bound.warning("hop", decision="reject", error=error, next=forward_to.name if forward_to else None)
            trail = [*query.trail, hop]
            if forward_to is not None:
                return Forward(forward_to, msgspec.structs.replace(query, trail=trail))
            return self._final(query, trail, alpha, scenario, None, f"engine failed at {cfg.name!r}: {error}")

        rejects, confidence = self._would_reject(result, alpha)
        hop = Hop(
            agent=cfg.name,
            decision="reject" if rejects and not must_answer else "answer",
            latency_ms=latency_ms,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            cost=cfg.cost,
            cost_usd=self._dollars(result),
            confidence=confidence,
            forced=rejects and must_answer,
        )
        trail = [*query.trail, hop]
        bound.info(
            "hop",
            decision=hop.decision,
            forced=hop.forced,
            next=peer.name if (rejects and peer) else None,
            latency_ms=latency_ms,
            tokens_out=result.tokens_out,
            reject_probability=result.reject_probability,  # why, when a threshold decided
        )
        if not rejects or must_answer:
            return self._final(query, trail, alpha, scenario, hop, None, text=result.text)
        if peer is not None:
            return Forward(peer, msgspec.structs.replace(query, trail=trail))
        return self._final(query, trail, alpha, scenario, None, exhausted_reason)

    def reroute(self, query: Query, removed: str) -> Outcome:
        """A hand-off found on the topic of an agent that a redeploy removed (the entry agent
        reads those topics): recorded as that agent's reject, it goes to the cheapest agent of
        the topology the query has not visited, within its hop bound; with none left it is
        answered `unanswered`, saying why. Never dropped."""
        cfg = self.config
        reason = f"agent {removed!r} was removed from the topology; re-routed by {cfg.name!r}"
        trail = [*query.trail, Hop(agent=removed, decision="reject", error=reason)]
        visited = {hop.agent for hop in trail}
        peer = min((p for p in cfg.agents if p.name not in visited), key=lambda p: p.cost, default=None)
        if peer is not None and len(trail) < self.hop_budget(query):
            log.warning("rerouted", query_id=query.id, removed=removed, to=peer.name)
            return Forward(peer, msgspec.structs.replace(query, trail=trail))
        log.warning("rerouted", query_id=query.id, removed=removed, to=None)
        alpha, scenario = resolve_alpha(query.alpha, query.scenario, cfg.default_alpha)
        return self._final(query, trail, alpha, scenario, None, f"{reason}, with no agent left to take it")

    async def _generate(self, request: EngineRequest, bound, on_text: TextSink | None = None) -> tuple[EngineResult | None, str | None]:
        error = None
        for attempt in range(self.config.engine_retries + 1):
            try:
                if on_text is not None:
                    return await self.engine.generate(request, on_text=on_text), None
                return await self.engine.generate(request), None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any engine failure is retried, then routed
                error = f"{type(exc).__name__}: {exc}"
                bound.warning("engine_error", attempt=attempt + 1, error=error)
                if attempt < self.config.engine_retries:  # back off between tries, not after the last
                    await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        return None, error

    def _would_reject(self, result: EngineResult, alpha: float) -> tuple[bool, float | None]:
        """Apply the agent's self-awareness mode; returns (rejects, calibrated confidence)."""
        cfg = self.config
        if cfg.awareness == "confidence" and result.confidence is not None:
            p = cfg.calibration(result.confidence) if cfg.calibration else result.confidence
            return not confident_enough(p, alpha, cfg.gamma), round(p, 6)
        # Generative mode (confidence mode without a confidence only reaches here when forced).
        rejects = result.decision == "reject" or is_reject(result.text)
        return rejects, result.confidence

    def _dollars(self, result: EngineResult) -> float | None:
        if result.cost_usd is not None:
            return result.cost_usd
        if self.config.prices is not None:
            return self.config.prices.dollars(result.tokens_in, result.tokens_out)
        return None

    def _final(
        self,
        query: Query,
        trail: list[Hop],
        alpha: float,
        scenario,
        hop: Hop | None,
        reason: str | None,
        text: str | None = None,
    ) -> Final:
        answered = hop is not None
        answer = Answer(
            id=query.id or "",
            status="answered" if answered else "unanswered",
            alpha=alpha,
            answer=text if answered else None,
            agent=self.config.name if answered else None,
            scenario=scenario,
            forced=bool(hop and hop.forced),
            cost=self.config.cost if answered else 0.0,
            reason=reason,
            trail=trail,
            totals=Totals.of(trail),
            tags=query.tags,
            metadata=query.metadata,
        )
        return Final(query.reply_to or self.config.answers_topic, answer)
