"""Property: over random meshes, every query ends, visits no agent twice, and ends as the
on_exhausted rule says.

Delivery is simulated in memory: the real `Agent.process` of the agent each Forward names is
called with the forwarded query, exactly what the Kafka consume loop does between topics. Agents
run either the real ReplayEngine (recorded decisions, served from a trace file written per
example) or a deterministic text-only fake engine, in generative or confidence mode. An
independent oracle, written from the documented rules, predicts every step.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disrouter.actors.agent import Agent, Final, Forward
from disrouter.actors.contracts import Query, Scenario
from disrouter.actors.decision import REJECT_PHRASE
from disrouter.actors.engine import EngineRequest, EngineResult
from disrouter.actors.engines.replay import ReplayEngine
from disrouter.topology.compile import agent_configs
from disrouter.topology.errors import TopologyError
from disrouter.topology.load import parse_topology
from disrouter.topology.validate import find_cycle

POLICIES = ["first_unvisited", "cheapest_unvisited", "tag_match", "hash_unvisited"]
TAGS = ["math", "code", "law"]
QUERY_IDS = ["q-0", "q-1", "q-2"]
OUTCOMES = ["answer", "reject", "fail"]


@dataclass
class AgentPlan:
    name: str
    cost: float
    next: list[str]
    policy: str
    terminal: bool | None
    tags: list[str]
    awareness: str
    engine: str  # "replay" | "fake"
    outcome: dict[str, str]  # query id → answer / reject / fail
    confidence: dict[str, float | None]
    tokens: tuple[int, int]


@dataclass
class Plan:
    agents: list[AgentPlan]
    max_hops: int | None
    on_exhausted: str
    gamma: float
    queries: list[dict[str, Any]] = field(default_factory=list)


@st.composite
def plans(draw) -> Plan:
    # The shape (agents, edges, policies, modes, bounds) is drawn field by field so it shrinks
    # well; the bulky per-query behaviour comes from one drawn seed (much cheaper to generate).
    n = draw(st.integers(min_value=2, max_value=6))  # (a lone agent is covered in test_agent)
    names = [f"a{i}" for i in range(n)]
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    agents = []
    for name in names:
        others = [x for x in names if x != name]
        # an ordered subset of the others (its order is the declaration order policies see)
        order = draw(st.permutations(others))
        nxt = order[: draw(st.integers(min_value=1 if name == "a0" else 0, max_value=len(others)))]
        agents.append(
            AgentPlan(
                name=name,
                cost=rng.choice([0.0, 0.1, 0.3, 0.3, 0.6, 0.9]),
                next=nxt,
                policy=draw(st.sampled_from(POLICIES)),
                # a leaf is terminal by default; it may be declared non-terminal instead
                terminal=None if nxt else draw(st.sampled_from([None, False])),
                tags=rng.sample(TAGS, rng.randint(0, 2)),
                awareness=draw(st.sampled_from(["generative", "confidence"])),
                engine=draw(st.sampled_from(["replay", "fake"])),
                # mostly rejects, so paths run long and exhaust; a few engine failures
                outcome={q: rng.choices(OUTCOMES, weights=[2, 7, 1])[0] for q in QUERY_IDS},
                confidence={q: rng.choice([None, 0.05, 0.2, 0.4, 0.5, 0.75, 0.9, 0.99]) for q in QUERY_IDS},
                tokens=(rng.randint(0, 50), rng.randint(0, 20)),
            )
        )
    # keep what the entry (a0) reaches: validation rightly rejects unreachable agents
    reach, stack = {"a0"}, ["a0"]
    by_name = {a.name: a for a in agents}
    while stack:
        for nxt in by_name[stack.pop()].next:
            if nxt not in reach:
                reach.add(nxt)
                stack.append(nxt)
    agents = [a for a in agents if a.name in reach]
    cyclic = find_cycle({a.name: a.next for a in agents}) is not None
    max_hops = draw(st.integers(min_value=1, max_value=8))
    if not cyclic and draw(st.booleans()):
        max_hops = None  # a chain or tree needs no hop bound
    plan = Plan(
        agents=agents,
        max_hops=max_hops,
        on_exhausted=draw(st.sampled_from(["force", "unanswered"])),
        gamma=rng.choice([0.5, 0.5, 1.0]),
    )
    for qid in QUERY_IDS:
        plan.queries.append(
            {
                "id": qid,
                "prompt": f"prompt of {qid}",
                "scenario": rng.choice([None, *Scenario]),
                "alpha": rng.choice([None, None, 0.0, 0.2, 0.36, 0.5, 0.8, 1.0]),
                "max_hops": rng.choice([None, None, *range(1, 11)]),
                "tags": rng.sample(TAGS, rng.randint(0, 2)),
            }
        )
    return plan


class TextOnlyEngine:
    """Deterministic fake: says the reject phrase (only when offered it) or answers; or fails.

    It reports no decision of its own, so the agent must read the reply text.
    """

    def __init__(self, plan: AgentPlan) -> None:
        self.plan = plan

    async def generate(self, request: EngineRequest) -> EngineResult:
        outcome = self.plan.outcome[request.query_id]
        if outcome == "fail":
            raise RuntimeError(f"{self.plan.name} is down")
        # like a live model: the prompt offers the reject only when allowed and not in
        # confidence mode (there the model is asked to always answer)
        reject = outcome == "reject" and request.allow_reject and not request.want_confidence
        return EngineResult(
            text=REJECT_PHRASE if reject else f"{self.plan.name}:{request.query_id}",
            tokens_in=self.plan.tokens[0],
            tokens_out=self.plan.tokens[1],
            confidence=self.plan.confidence[request.query_id],
        )


class Recording:
    """Wraps an engine and keeps the requests it was asked."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.requests: list[EngineRequest] = []

    async def generate(self, request: EngineRequest) -> EngineResult:
        self.requests.append(request)
        return await self.inner.generate(request)


def trace_lines(plan: Plan) -> list[str]:
    lines = []
    for a in plan.agents:
        for qid in QUERY_IDS:
            if a.outcome[qid] == "fail":
                continue  # missing from the trace + on_missing: error → the engine fails
            record: dict[str, Any] = {
                "query_id": qid,
                "agent": a.name,
                "correct": a.outcome[qid] == "answer",
                "answer": f"{a.name}:{qid}",
                "decision": a.outcome[qid],
                "tokens_in": a.tokens[0],
                "tokens_out": a.tokens[1],
            }
            if a.confidence[qid] is not None:
                record["confidence"] = a.confidence[qid]
            lines.append(json.dumps(record))
    return lines


def topology_args(plan: Plan, trace: Path, on_exhausted: str) -> dict[str, Any]:
    agents = []
    for a in plan.agents:
        spec: dict[str, Any] = {
            "name": a.name,
            "cost": a.cost,
            "engine": {"type": "replay", "trace": str(trace), "on_missing": "error"},
            "next": a.next,
            "policy": a.policy,
            "tags": a.tags,
            "awareness": a.awareness,
        }
        if a.terminal is not None:
            spec["terminal"] = a.terminal
        agents.append(spec)
    return {"namespace": "prop", "agents": agents, "max_hops": plan.max_hops, "on_exhausted": on_exhausted, "gamma": plan.gamma}


# --- the oracle: the documented rules, written independently of the agent ----------------------


def expected_choice(policy: str, unvisited: list[tuple[str, float, tuple[str, ...]]], tags: list[str]) -> str | None:
    """The peer a deterministic policy must pick (None: any unvisited peer is fine)."""
    cheapest = min(unvisited, key=lambda p: p[1])[0]  # min keeps the first of equal costs
    if policy == "first_unvisited":
        return unvisited[0][0]
    if policy == "cheapest_unvisited":
        return cheapest
    if policy == "tag_match":
        for name, _, peer_tags in unvisited:
            if set(tags) & set(peer_tags):
                return name
        return cheapest
    return None


BLIND = "the engine returned no confidence (awareness: confidence)"


def would_reject(a: AgentPlan, qid: str, alpha: float, gamma: float, allow_reject: bool) -> bool:
    confidence = a.confidence[qid]
    if a.awareness == "confidence" and confidence is not None:
        return not confidence > (1.0 - alpha) ** gamma  # reject iff p ≤ (1 − α)^γ
    if a.engine == "replay":
        return a.outcome[qid] == "reject"  # the recorded decision travels even when forced
    # text only: the phrase is said only where the prompt offers it
    offered = allow_reject and a.awareness != "confidence"
    return a.outcome[qid] == "reject" and offered


async def simulate(plan: Plan, tmp: Path) -> None:
    trace = tmp / "trace.jsonl"
    trace.write_text("\n".join(trace_lines(plan)) + "\n")
    on_exhausted = plan.on_exhausted
    try:
        topology = parse_topology(topology_args(plan, trace, on_exhausted))
    except TopologyError as exc:
        # the one legal reason to refuse such a mesh: an acyclic graph under `unanswered`
        # whose leaves are all declared non-terminal
        assert on_exhausted == "unanswered", exc.problems
        assert [f for f, _ in exc.problems] == ["agents"], exc.problems
        assert "no terminal agent is reachable" in exc.problems[0][1]
        assert not any(a.terminal is None and not a.next for a in plan.agents)
        on_exhausted = "force"
        topology = parse_topology(topology_args(plan, trace, on_exhausted))
    configs = agent_configs(topology)
    by_name = {a.name: a for a in plan.agents}

    engines: dict[str, Recording] = {}
    agents: dict[str, Agent] = {}
    engine_error: dict[str, str] = {}  # the error a failing engine reports, per agent
    for name, cfg in configs.items():
        a = by_name[name]
        if a.engine == "replay" and any(o != "fail" for o in a.outcome.values()):
            inner = ReplayEngine.from_options(agent=name, **{k: v for k, v in cfg.engine.items() if k != "type"})
            await inner.start()
            engine_error[name] = "EngineError: query {qid!r} is not in the trace of {name!r}"
        else:
            # (a replay agent with no trace lines at all could not start: it is faked too)
            inner = TextOnlyEngine(a)
            engine_error[name] = "RuntimeError: {name} is down"
        engines[name] = Recording(inner)
        agents[name] = Agent(msgspec.structs.replace(cfg, engine_retries=0), engines[name])

    for spec in plan.queries:
        query = Query(
            prompt=spec["prompt"],
            id=spec["id"],
            scenario=spec["scenario"],
            alpha=spec["alpha"],
            max_hops=spec["max_hops"],
            tags=spec["tags"],
        )
        qid = query.id
        alpha = spec["alpha"] if spec["alpha"] is not None else (spec["scenario"].alpha if spec["scenario"] else topology.alpha)
        bounds = [b for b in (spec["max_hops"], plan.max_hops) if b is not None]
        budget = min(bounds) if bounds else topology.limits.max_hops

        path: list[str] = []
        current = topology.entry_agent
        final: Final | None = None
        for _ in range(len(plan.agents) + 1):
            path.append(current)
            a, cfg = by_name[current], configs[current]
            k = len(path)

            # what the rules say this agent must do
            unvisited = [(p.name, p.cost, p.tags) for p in cfg.next if p.name not in path]
            terminal = cfg.terminal
            out_of_hops = not terminal and k >= budget
            no_candidate = not terminal and not out_of_hops and not unvisited
            exhausted = out_of_hops or no_candidate
            must_answer = terminal or (exhausted and on_exhausted == "force")
            # confidence mode with no confidence cannot judge: like a failure, unless forced
            blind = a.outcome[qid] != "fail" and a.awareness == "confidence" and a.confidence[qid] is None and not must_answer
            fails = a.outcome[qid] == "fail" or blind
            error = BLIND if blind else engine_error[current].format(qid=qid, name=current)
            rejects = not fails and would_reject(a, qid, alpha, plan.gamma, not must_answer)

            n_before = len(engines[current].requests)
            outcome = await agents[current].process(query)
            request = engines[current].requests[-1]
            assert len(engines[current].requests) == n_before + 1  # asked once (no retries)
            assert request.allow_reject is (not must_answer)
            assert request.alpha == alpha
            assert request.want_confidence is (a.awareness == "confidence")

            if isinstance(outcome, Forward):
                assert (fails or rejects) and not exhausted and not terminal, (path, a)
                peer = outcome.peer.name
                assert peer in [p for p, _, _ in unvisited]  # a declared, unvisited peer
                wanted = expected_choice(cfg.policy, unvisited, spec["tags"])
                assert wanted is None or peer == wanted
                assert outcome.peer.topic == f"prop.agent.{peer}"
                hop = outcome.query.trail[-1]
                assert (hop.agent, hop.decision, hop.forced) == (current, "reject", False)
                assert hop.error == (error if fails else None)
                assert outcome.query.trail[:-1] == query.trail  # the trail only grows
                assert (outcome.query.id, outcome.query.prompt, outcome.query.max_hops) == (
                    qid, query.prompt, query.max_hops,
                )
                query, current = outcome.query, peer
                continue

            assert isinstance(outcome, Final)
            final = outcome
            assert final.topic == "prop.answers"
            answer = final.answer
            if fails:
                assert exhausted or terminal
                assert answer.status == "unanswered"
                assert answer.reason == f"engine failed at {current!r}: {error}"
                assert answer.trail[-1].error == error
            elif rejects and not must_answer:
                assert exhausted and on_exhausted == "unanswered"
                assert answer.status == "unanswered"
                if out_of_hops:
                    assert answer.reason == f"max_hops ({budget}) reached at {current!r}"
                else:
                    assert answer.reason == f"no unvisited candidate left after {current!r}"
            else:
                assert answer.status == "answered"
                assert answer.reason is None
                assert answer.agent == current and answer.cost == a.cost
                assert answer.answer == f"{current}:{qid}"
                assert answer.forced is rejects  # forced exactly when it would have rejected
                assert answer.trail[-1].decision == "answer"
                assert answer.trail[-1].forced is rejects
            if answer.status == "unanswered":
                assert answer.reason and answer.agent is None and answer.answer is None and answer.cost == 0.0
                assert answer.trail[-1].decision == "reject"
            break

        # every query ends, within its hop budget, never twice at one agent
        assert final is not None, f"{qid} never ended: {path}"
        assert len(path) <= budget
        assert len(set(path)) == len(path)
        answer = final.answer
        assert answer.id == qid and answer.alpha == alpha
        assert [h.agent for h in answer.trail] == path
        assert all(h.decision == "reject" for h in answer.trail[:-1])
        assert answer.totals.hops == len(path)
        assert abs(answer.totals.cost - sum(by_name[n].cost for n in path)) < 1e-6
        ran = [by_name[n] for n in path if by_name[n].outcome[qid] != "fail"]
        assert answer.totals.tokens_in == sum(a.tokens[0] for a in ran)
        assert answer.totals.tokens_out == sum(a.tokens[1] for a in ran)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plans())
def test_every_query_ends_once_per_agent_as_on_exhausted_says(plan):
    loop = asyncio.new_event_loop()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            loop.run_until_complete(simulate(plan, Path(tmp)))
    finally:
        loop.close()
