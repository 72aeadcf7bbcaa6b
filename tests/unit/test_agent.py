"""Agent.process: the decision path for one query, with a small fake engine.

The configs come from a parsed topology (topology.compile.agent_configs), so these tests also
pin how the declaration reaches the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from disrouter.actors.agent import Agent, Final, Forward
from disrouter.actors.config import AgentConfig
from disrouter.actors.contracts import Hop, Query, Scenario
from disrouter.actors.decision import REJECT_PHRASE, SCENARIO_INSTRUCTIONS
from disrouter.actors.engine import EngineRequest, EngineResult
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology

ENGINE = {"type": "replay", "trace": "unused.jsonl"}  # validated by name only; never started


class FakeEngine:
    """Replies with whatever `reply(request)` says; records every request it saw."""

    def __init__(self, reply: Callable[[EngineRequest], EngineResult | Exception], delay_s: float = 0.0) -> None:
        self.reply = reply
        self.delay_s = delay_s
        self.requests: list[EngineRequest] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def generate(self, request: EngineRequest) -> EngineResult:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out = self.reply(request)
        if isinstance(out, Exception):
            raise out
        return out


def answers(text: str = "The answer is: 4", **kw) -> FakeEngine:
    return FakeEngine(lambda r: EngineResult(text=text, **kw))


def rejects(**kw) -> FakeEngine:
    # a real model can only say the phrase when offered it; forced, it answers
    return FakeEngine(
        lambda r: EngineResult(text=REJECT_PHRASE if r.allow_reject else "forced answer", decision="reject", **kw)
    )


def topology(agents: list[dict[str, Any]], **top: Any) -> dict[str, AgentConfig]:
    args = {"namespace": "t", "agents": [{"engine": ENGINE, **a} for a in agents], **top}
    return agent_configs(parse_topology(args))


def chain(n: int = 3, **top: Any) -> dict[str, AgentConfig]:
    names = [f"a{i}" for i in range(n)]
    costs = [round(0.1 + 0.8 * i / max(n - 1, 1), 3) for i in range(n)]
    agents = [
        {"name": nm, "cost": c, **({"next": [names[i + 1]]} if i + 1 < n else {})}
        for i, (nm, c) in enumerate(zip(names, costs))
    ]
    return topology(agents, **top)


async def run(config: AgentConfig, engine, query: Query):
    return await Agent(config, engine).process(query)


# --- answer vs forward -------------------------------------------------------------------------


async def test_an_answer_is_final_on_the_answers_topic():
    cfg = chain()["a0"]
    out = await run(cfg, answers("The answer is: 4", tokens_in=12, tokens_out=5), Query(prompt="2+2?", id="q1"))
    assert isinstance(out, Final)
    assert out.topic == "t.answers"
    a = out.answer
    assert (a.id, a.status, a.answer, a.agent, a.forced, a.reason) == ("q1", "answered", "The answer is: 4", "a0", False, None)
    assert a.cost == 0.1
    assert [h.agent for h in a.trail] == ["a0"]
    assert a.trail[0].decision == "answer" and a.trail[0].tokens_in == 12 and a.trail[0].tokens_out == 5


async def test_a_reject_forwards_to_the_next_agent_with_the_trail():
    cfgs = chain()
    engine = rejects(tokens_in=7, tokens_out=2)
    q = Query(prompt="hard", id="q2", tags=["x"], metadata={"k": 1})
    out = await run(cfgs["a0"], engine, q)
    assert isinstance(out, Forward)
    assert out.peer.name == "a1" and out.peer.topic == "t.agent.a1" and out.peer.cost == 0.5
    fwd = out.query
    assert (fwd.id, fwd.prompt, fwd.tags, fwd.metadata) == ("q2", "hard", ["x"], {"k": 1})
    assert len(fwd.trail) == 1
    hop = fwd.trail[0]
    assert (hop.agent, hop.decision, hop.cost, hop.tokens_in, hop.tokens_out, hop.forced) == ("a0", "reject", 0.1, 7, 2, False)
    assert q.trail == []  # the incoming query is not mutated
    assert engine.requests[0].allow_reject is True


async def test_reject_detected_from_text_alone():
    # an engine that knows nothing of decisions: the phrase in the text is enough
    out = await run(chain()["a0"], answers("  i don\u2019t know."), Query(prompt="p", id="q"))
    assert isinstance(out, Forward)
    out = await run(chain()["a0"], answers("I don't know how, but 4"), Query(prompt="p", id="q"))
    assert isinstance(out, Final) and out.answer.status == "answered"


async def test_walk_a_chain_to_the_terminal_forced_answer():
    cfgs = chain(3)
    engine = rejects(tokens_in=10, tokens_out=1)
    q = Query(prompt="hard", id="q3")
    out = await run(cfgs["a0"], engine, q)
    out = await run(cfgs["a1"], engine, out.query)
    assert isinstance(out, Forward) and out.peer.name == "a2"
    out = await run(cfgs["a2"], engine, out.query)
    assert isinstance(out, Final)
    a = out.answer
    assert a.status == "answered" and a.agent == "a2" and a.answer == "forced answer"
    assert a.forced is True  # the terminal would have rejected
    assert [(h.agent, h.decision, h.forced) for h in a.trail] == [
        ("a0", "reject", False),
        ("a1", "reject", False),
        ("a2", "answer", True),
    ]
    # the terminal was never offered the reject
    assert [r.allow_reject for r in engine.requests] == [True, True, False]
    # the paper's cost: the answering agent's; totals: everything that ran
    assert a.cost == 0.9
    assert a.totals.hops == 3
    assert a.totals.cost == pytest.approx(0.1 + 0.5 + 0.9)
    assert (a.totals.tokens_in, a.totals.tokens_out) == (30, 3)


async def test_terminal_that_answers_is_not_forced():
    out = await run(chain(3)["a2"], answers("4"), Query(prompt="p", id="q"))
    assert out.answer.forced is False and out.answer.trail[0].forced is False


# --- scenario, alpha, instruction --------------------------------------------------------------


async def test_alpha_and_scenario_reach_the_engine_and_the_answer():
    cfg = chain()["a0"]
    engine = answers()
    out = await run(cfg, engine, Query(prompt="p", id="q", scenario=Scenario.cost_first))
    assert engine.requests[-1].alpha == 0.8
    assert engine.requests[-1].instruction == SCENARIO_INSTRUCTIONS[Scenario.cost_first]
    assert (out.answer.alpha, out.answer.scenario) == (0.8, Scenario.cost_first)

    out = await run(cfg, engine, Query(prompt="p", id="q", alpha=0.25))
    assert engine.requests[-1].alpha == 0.25
    # a raw α is spelled out in the instruction (the trained model reads it), no scenario on the answer
    assert engine.requests[-1].instruction == "Scenario: cost weight α = 0.25."
    assert (out.answer.alpha, out.answer.scenario) == (0.25, None)

    out = await run(cfg, engine, Query(prompt="p", id="q"))
    assert out.answer.alpha == 0.5  # the topology default (balance)
    assert engine.requests[-1].instruction == SCENARIO_INSTRUCTIONS[Scenario.balance]


async def test_topology_default_scenario_and_alpha():
    cfg = chain(default_scenario="performance_first")["a0"]
    out = await run(cfg, answers(), Query(prompt="p", id="q"))
    assert out.answer.alpha == 0.2
    cfg = chain(default_scenario="performance_first", default_alpha=0.65)["a0"]
    out = await run(cfg, answers(), Query(prompt="p", id="q"))
    assert out.answer.alpha == 0.65


def confidence_chain(**agent_extra: Any) -> dict[str, AgentConfig]:
    return topology(
        [
            {"name": "small", "cost": 0.1, "awareness": "confidence", "next": ["large"], **agent_extra},
            {"name": "large", "cost": 0.9},
        ]
    )


@pytest.mark.parametrize(
    ("scenario", "forwards"),
    [
        # confidence 0.8 against (1 − α)^0.5: PF 0.894 → reject; balance 0.707 → answer; CF 0.447 → answer
        (Scenario.performance_first, True),
        (Scenario.balance, False),
        (Scenario.cost_first, False),
    ],
)
async def test_confidence_mode_per_query_scenario_changes_the_decision(scenario, forwards):
    cfg = confidence_chain()["small"]
    engine = answers("4", confidence=0.8)
    out = await run(cfg, engine, Query(prompt="p", id="q", scenario=scenario))
    assert isinstance(out, Forward) is forwards
    hop = out.query.trail[-1] if forwards else out.answer.trail[-1]
    assert hop.confidence == 0.8
    assert hop.decision == ("reject" if forwards else "answer")
    assert engine.requests[0].want_confidence is True


async def test_confidence_mode_raw_alpha_decides_too():
    cfg = confidence_chain()["small"]
    # α = 0.36 → threshold exactly 0.8: "≤ threshold" rejects
    assert isinstance(await run(cfg, answers("4", confidence=0.8), Query(prompt="p", id="q", alpha=0.36)), Forward)
    assert isinstance(await run(cfg, answers("4", confidence=0.81), Query(prompt="p", id="q", alpha=0.36)), Final)


async def test_confidence_mode_ignores_the_reject_phrase():
    # the decision comes from the probability, not the text
    cfg = confidence_chain()["small"]
    out = await run(cfg, answers(REJECT_PHRASE, confidence=0.99), Query(prompt="p", id="q"))
    assert isinstance(out, Final) and out.answer.status == "answered"


async def test_confidence_mode_applies_the_calibration():
    # raw 0.75 < 0.894 (PF) rejects uncalibrated; Platt a=2: logit(0.75)=ln 3 → sigmoid(ln 9) = 0.9 > 0.894
    q = Query(prompt="p", id="q", scenario=Scenario.performance_first)
    plain = confidence_chain()["small"]
    assert isinstance(await run(plain, answers("4", confidence=0.75), q), Forward)
    calibrated = confidence_chain(calibration={"type": "platt", "a": 2.0, "b": 0.0})["small"]
    out = await run(calibrated, answers("4", confidence=0.75), q)
    assert isinstance(out, Final)
    assert out.answer.trail[0].confidence == pytest.approx(0.9)


async def test_confidence_mode_without_a_confidence_never_answers_blind():
    # The prompt never offered the reject, so an answer without a confidence says nothing of
    # whether the agent knows: the query goes on, and the hop says why.
    cfg = confidence_chain()["small"]
    out = await run(cfg, answers("4"), Query(prompt="p", id="q"))
    assert isinstance(out, Forward)
    assert out.query.trail[-1].error == "the engine returned no confidence (awareness: confidence)"
    # Forced (as a terminal would be), it answers: there is nobody to pass to.
    forced = await run(cfg, answers("4"), Query(prompt="p", id="q", force_answer=True))
    assert isinstance(forced, Final) and forced.answer.status == "answered"


def test_a_confidence_agent_refuses_an_engine_without_confidence():
    from disrouter.actors.agent import Agent
    from disrouter.actors.errors import EngineError

    engine = answers("4")
    engine.provides_confidence = False
    with pytest.raises(EngineError, match="awareness: confidence"):
        Agent(confidence_chain()["small"], engine).check_engine()
    engine.provides_confidence = True
    Agent(confidence_chain()["small"], engine).check_engine()
    Agent(chain()["a0"], answers("4")).check_engine()  # generative mode needs none


def test_reject_at_needs_an_engine_that_reads_the_rejects_probability():
    from disrouter.actors.errors import EngineError

    cfg = topology([{"name": "a", "cost": 0.1, "next": ["b"], "reject_at": 0.5}, {"name": "b", "cost": 0.9}])["a"]
    assert cfg.reject_at == 0.5
    with pytest.raises(EngineError, match="cannot read the reject's probability"):
        Agent(cfg, answers("4")).check_engine()
    engine = answers("4")
    engine.reject_probability = lambda request: 0.0  # type: ignore[attr-defined]
    Agent(cfg, engine).check_engine()


async def test_reject_at_reaches_the_engine_only_where_the_reject_is_offered():
    configs = topology([{"name": "a", "cost": 0.1, "next": ["b"], "reject_at": 0.4}, {"name": "b", "cost": 0.9, "reject_at": 0.4}])
    engine = rejects()
    out = await run(configs["a"], engine, Query(prompt="p", id="q"))
    assert isinstance(out, Forward) and engine.requests[-1].reject_at == 0.4 and engine.requests[-1].allow_reject
    terminal = await run(configs["b"], engine, out.query)  # the terminal must answer: nothing to decide
    assert isinstance(terminal, Final) and engine.requests[-1].reject_at is None and not engine.requests[-1].allow_reject
    await run(configs["a"], engine, Query(prompt="p", id="q2", force_answer=True))
    assert engine.requests[-1].reject_at is None


async def test_a_threshold_per_scenario_reaches_the_engine_with_the_querys_scenario():
    per_scenario = {"performance_first": 0.55, "balance": 0.65, "cost_first": 0.8}
    configs = topology([{"name": "a", "cost": 0.1, "next": ["b"], "reject_at": per_scenario}, {"name": "b", "cost": 0.9}])
    engine = rejects()
    # A named scenario, its α, and a raw α nearest cost_first (0.7): the instruction's scenario.
    for query, want in [(Query(prompt="p", id="q1", scenario=Scenario.balance), 0.65), (Query(prompt="p", id="q2", alpha=0.2), 0.55),
                        (Query(prompt="p", id="q3", alpha=0.7), 0.8)]:
        await run(configs["a"], engine, query)
        assert engine.requests[-1].reject_at == want
    # The topology's default α (0.5) where the query names none.
    await run(configs["a"], engine, Query(prompt="p", id="q4"))
    assert engine.requests[-1].reject_at == 0.65


async def test_a_forced_query_is_never_passed_on_even_when_the_engine_fails():
    cfg = chain()["a0"]
    failing = FakeEngine(lambda r: RuntimeError("boom"))
    out = await run(cfg, failing, Query(prompt="p", id="q", force_answer=True))
    assert isinstance(out, Final) and out.answer.status == "unanswered"
    assert "boom" in out.answer.reason and out.answer.trail[-1].error
    # Not forced, the same failure passes the query on.
    assert isinstance(await run(cfg, failing, Query(prompt="p", id="q")), Forward)


async def test_confidence_mode_terminal_forced():
    cfgs = topology([{"name": "only", "cost": 0.3, "awareness": "confidence"}])
    out = await run(cfgs["only"], answers("4", confidence=0.1), Query(prompt="p", id="q"))
    assert out.answer.status == "answered" and out.answer.forced is True
    assert out.answer.trail[0].decision == "answer"


# --- hop bound ---------------------------------------------------------------------------------


async def test_max_hops_exhaustion_force():
    cfgs = chain(4, max_hops=2, on_exhausted="force")
    engine = rejects()
    out = await run(cfgs["a0"], engine, Query(prompt="p", id="q"))
    assert isinstance(out, Forward)
    out = await run(cfgs["a1"], engine, out.query)
    # a1 is the 2nd agent of 2 allowed: it must answer
    assert isinstance(out, Final)
    assert out.answer.status == "answered" and out.answer.agent == "a1" and out.answer.forced is True
    assert out.answer.answer == "forced answer"
    assert [r.allow_reject for r in engine.requests] == [True, False]


async def test_max_hops_exhaustion_unanswered():
    cfgs = chain(4, max_hops=2, on_exhausted="unanswered")
    engine = rejects()
    out = await run(cfgs["a0"], engine, Query(prompt="p", id="q"))
    out = await run(cfgs["a1"], engine, out.query)
    assert isinstance(out, Final)
    a = out.answer
    assert a.status == "unanswered"
    assert a.answer is None and a.agent is None and a.cost == 0.0 and a.forced is False
    assert "max_hops (2)" in a.reason and "'a1'" in a.reason
    assert [(h.agent, h.decision) for h in a.trail] == [("a0", "reject"), ("a1", "reject")]
    assert a.totals.cost == pytest.approx(0.1 + 0.367)  # both hops still cost (chain(4): 0.1, 0.367, …)
    # under `unanswered` the last agent may still reject (that is what makes it unanswered)
    assert [r.allow_reject for r in engine.requests] == [True, True]


async def test_max_hops_exhaustion_unanswered_but_the_agent_answers():
    cfgs = chain(4, max_hops=2, on_exhausted="unanswered")
    out = await run(cfgs["a1"], answers("4"), Query(prompt="p", id="q", trail=[Hop(agent="a0", decision="reject")]))
    assert out.answer.status == "answered" and out.answer.forced is False


async def test_query_max_hops_caps_the_topology_bound():
    cfgs = chain(4, max_hops=8)
    engine = rejects()
    out = await run(cfgs["a0"], engine, Query(prompt="p", id="q", max_hops=1))
    assert isinstance(out, Final) and out.answer.agent == "a0" and out.answer.forced is True
    # a query cannot raise the topology's bound
    cfgs = chain(4, max_hops=1)
    out = await run(cfgs["a0"], engine, Query(prompt="p", id="q", max_hops=5))
    assert isinstance(out, Final) and out.answer.agent == "a0"


async def test_no_unvisited_candidate_left():
    # a mesh of two: after a → b, b's only peer is visited
    top = dict(max_hops=5)
    mesh = [
        {"name": "a", "cost": 0.1, "next": ["b"]},
        {"name": "b", "cost": 0.2, "next": ["a"]},
    ]
    engine = rejects()
    cfgs = topology(mesh, **top, on_exhausted="force")
    out = await run(cfgs["a"], engine, Query(prompt="p", id="q"))
    assert isinstance(out, Forward) and out.peer.name == "b"
    out = await run(cfgs["b"], engine, out.query)
    assert isinstance(out, Final) and out.answer.agent == "b" and out.answer.forced is True

    # under `unanswered` a terminal must be reachable: z; b's candidates are a and z
    mesh_u = [
        {"name": "a", "cost": 0.1, "next": ["b"]},
        {"name": "b", "cost": 0.2, "next": ["a", "z"]},
        {"name": "z", "cost": 0.9},
    ]
    cfgs = topology(mesh_u, **top, on_exhausted="unanswered")
    # a query that already visited z (say it came in elsewhere) and a: b has nowhere to go
    q = Query(prompt="p", id="q", trail=[Hop(agent="z", decision="reject"), Hop(agent="a", decision="reject")])
    out = await run(cfgs["b"], rejects(), q)
    assert out.answer.status == "unanswered"
    assert out.answer.reason == "no unvisited candidate left after 'b'"


# --- engine failures ---------------------------------------------------------------------------


def failing(counter: list[int]) -> FakeEngine:
    def reply(r: EngineRequest):
        counter.append(1)
        return RuntimeError("GPU on fire")

    return FakeEngine(reply)


async def test_engine_failing_every_retry_forwards_with_the_error():
    cfg = msgspec.structs.replace(chain()["a0"], engine_retries=2)
    calls: list[int] = []
    out = await run(cfg, failing(calls), Query(prompt="p", id="q"))
    assert len(calls) == 3  # one try + two retries
    assert isinstance(out, Forward) and out.peer.name == "a1"
    hop = out.query.trail[0]
    assert hop.decision == "reject" and hop.error == "RuntimeError: GPU on fire"
    assert hop.cost == 0.1  # the attempt still cost


async def test_engine_failing_at_the_end_gives_an_unanswered_answer():
    cfg = msgspec.structs.replace(chain()["a2"], engine_retries=1)
    calls: list[int] = []
    q = Query(prompt="p", id="q", trail=[Hop(agent="a0", decision="reject"), Hop(agent="a1", decision="reject")])
    out = await run(cfg, failing(calls), q)
    assert len(calls) == 2
    assert isinstance(out, Final)
    a = out.answer
    assert a.status == "unanswered" and a.answer is None and a.agent is None
    assert "engine failed at 'a2'" in a.reason and "GPU on fire" in a.reason
    assert a.trail[-1].error == "RuntimeError: GPU on fire"
    assert len(a.trail) == 3


async def test_engine_recovering_on_a_retry_answers():
    calls: list[int] = []

    def reply(r):
        calls.append(1)
        return RuntimeError("flaky") if len(calls) == 1 else EngineResult(text="4")

    cfg = msgspec.structs.replace(chain()["a0"], engine_retries=2)
    out = await run(cfg, FakeEngine(reply), Query(prompt="p", id="q"))
    assert len(calls) == 2
    assert out.answer.status == "answered" and out.answer.trail[0].error is None


@pytest.mark.parametrize(("retries", "backoffs"), [(0, []), (1, [0.05]), (3, [0.05, 0.1, 0.2])])
async def test_backoff_is_between_tries_not_after_the_last(monkeypatch, retries, backoffs):
    # a failing engine's query is passed on as soon as the last try failed
    real_sleep = asyncio.sleep
    slept: list[float] = []
    this_test = asyncio.current_task()

    async def recording_sleep(delay, *args, **kwargs):
        # Patching the module patches asyncio.sleep for every task on the (session-wide) loop:
        # count only the sleeps of this test's own task, which runs the agent.
        if asyncio.current_task() is this_test:
            slept.append(delay)
        await real_sleep(0 if asyncio.current_task() is this_test else delay)

    monkeypatch.setattr("disrouter.actors.agent.asyncio.sleep", recording_sleep)
    calls: list[int] = []
    cfg = msgspec.structs.replace(chain()["a0"], engine_retries=retries)
    out = await run(cfg, failing(calls), Query(prompt="p", id="q"))
    monkeypatch.undo()
    assert isinstance(out, Forward)
    assert len(calls) == retries + 1
    assert slept == pytest.approx(backoffs)


async def test_cancellation_is_not_swallowed_as_an_engine_error():
    async def never(request):
        await asyncio.sleep(10)

    engine = FakeEngine(lambda r: EngineResult(text="x"))
    engine.generate = never  # type: ignore[method-assign]
    task = asyncio.create_task(run(chain()["a0"], engine, Query(prompt="p", id="q")))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- trail, totals, reply_to -------------------------------------------------------------------


async def test_latency_tokens_and_dollars_in_the_hop_and_totals():
    cfgs = topology(
        [
            {"name": "a", "cost": 0.2, "next": ["b"],
             "prices": {"usd_per_1k_tokens_in": 1.0, "usd_per_1k_tokens_out": 2.0}},
            {"name": "b", "cost": 0.7},
        ]
    )
    slow_reject = FakeEngine(
        lambda r: EngineResult(text=REJECT_PHRASE, tokens_in=100, tokens_out=50), delay_s=0.03
    )
    out = await run(cfgs["a"], slow_reject, Query(prompt="p", id="q"))
    hop_a = out.query.trail[0]
    assert hop_a.latency_ms >= 30
    assert hop_a.cost_usd == pytest.approx(100 * 1.0 / 1000 + 50 * 2.0 / 1000)  # 0.1 + 0.1
    # the engine's own dollars win over topology prices; b has no prices
    slow_answer = FakeEngine(lambda r: EngineResult(text="4", tokens_in=20, tokens_out=5, cost_usd=0.01), delay_s=0.01)
    out = await run(cfgs["b"], slow_answer, out.query)
    a = out.answer
    hop_b = a.trail[1]
    assert hop_b.cost_usd == 0.01 and hop_b.latency_ms >= 10
    assert a.totals.hops == 2
    assert a.totals.latency_ms == pytest.approx(hop_a.latency_ms + hop_b.latency_ms, abs=0.002)
    assert (a.totals.tokens_in, a.totals.tokens_out) == (120, 55)
    assert a.totals.cost == pytest.approx(0.9)
    assert a.totals.cost_usd == pytest.approx(0.21)
    assert a.cost == 0.7


async def test_no_prices_no_dollars():
    out = await run(chain()["a0"], answers("4", tokens_in=100), Query(prompt="p", id="q"))
    assert out.answer.trail[0].cost_usd is None and out.answer.totals.cost_usd is None


async def test_reply_to_is_honoured_for_answers_and_unanswered():
    cfg = chain()["a2"]
    out = await run(cfg, answers(), Query(prompt="p", id="q", reply_to="client-7.inbox"))
    assert out.topic == "client-7.inbox"
    cfgs = chain(3, max_hops=1, on_exhausted="unanswered")
    out = await run(cfgs["a0"], rejects(), Query(prompt="p", id="q", reply_to="client-7.inbox"))
    assert out.answer.status == "unanswered" and out.topic == "client-7.inbox"


async def test_reply_to_travels_with_a_forwarded_query():
    cfgs = chain()
    out = await run(cfgs["a0"], rejects(), Query(prompt="p", id="q", reply_to="me.inbox", max_hops=3))
    assert out.query.reply_to == "me.inbox" and out.query.max_hops == 3
    out = await run(cfgs["a1"], answers(), out.query)
    assert out.topic == "me.inbox"


async def test_tags_and_metadata_reach_the_answer():
    out = await run(chain()["a0"], answers(), Query(prompt="p", id="q", tags=["m"], metadata={"u": [1]}))
    assert out.answer.tags == ["m"] and out.answer.metadata == {"u": [1]}


async def test_hop_budget():
    cfg = chain(max_hops=6)["a0"]
    agent = Agent(cfg, answers())
    assert agent.hop_budget(Query(prompt="p")) == 6
    assert agent.hop_budget(Query(prompt="p", max_hops=3)) == 3
    assert agent.hop_budget(Query(prompt="p", max_hops=9)) == 6
    unbounded = chain(max_hops=None)["a0"]  # a chain has no cycle: a bound is optional
    assert Agent(unbounded, answers()).hop_budget(Query(prompt="p")) == unbounded.limits.max_hops
    assert Agent(unbounded, answers()).hop_budget(Query(prompt="p", max_hops=4)) == 4


async def test_tree_routing_by_tags_through_the_agent():
    cfgs = topology(
        [
            {"name": "triage", "cost": 0.1, "next": ["math", "code"], "policy": "tag_match"},
            {"name": "math", "cost": 0.4, "tags": ["math"], "next": ["large"]},
            {"name": "code", "cost": 0.3, "tags": ["code"], "next": ["large"]},
            {"name": "large", "cost": 0.9},
        ]
    )
    out = await run(cfgs["triage"], rejects(), Query(prompt="p", id="q", tags=["math"]))
    assert out.peer.name == "math"
    out = await run(cfgs["triage"], rejects(), Query(prompt="p", id="q", tags=["poetry"]))
    assert out.peer.name == "code"  # no match: the cheapest child


async def test_force_answer_makes_any_agent_answer_like_a_terminal():
    configs = chain(3)
    engine = rejects()
    outcome = await run(configs["a0"], engine, Query(id="q", prompt="p", force_answer=True))
    assert isinstance(outcome, Final)
    assert outcome.answer.agent == "a0" and outcome.answer.forced
    assert outcome.answer.answer == "forced answer"
    assert engine.requests[0].allow_reject is False  # never offered the reject
    # Without the flag the same agent passes the query on.
    assert isinstance(await run(configs["a0"], rejects(), Query(id="q", prompt="p")), Forward)


def test_a_hand_off_left_for_a_removed_agent_goes_to_the_cheapest_unvisited_agent():
    # The topology once had `extra` between a1 and a2; the entry agent re-routes what it left.
    configs = chain(3)
    entry = configs["a0"]
    assert [p.name for p in entry.agents] == ["a0", "a1", "a2"] and configs["a1"].agents == []
    query = Query(id="q", prompt="p", trail=[Hop(agent="a0", decision="reject"), Hop(agent="a1", decision="reject")])
    outcome = Agent(entry, answers()).reroute(query, "extra")
    assert isinstance(outcome, Forward) and outcome.peer.name == "a2"
    hop = outcome.query.trail[-1]
    assert (hop.agent, hop.decision) == ("extra", "reject") and "removed from the topology" in (hop.error or "")


def test_a_hand_off_left_for_a_removed_agent_with_every_agent_visited_is_answered_unanswered():
    entry = chain(2)["a0"]
    query = Query(id="q", prompt="p", trail=[Hop(agent="a0", decision="reject"), Hop(agent="a1", decision="reject")])
    outcome = Agent(entry, answers()).reroute(query, "gone")
    assert isinstance(outcome, Final) and outcome.answer.status == "unanswered"
    assert "'gone' was removed" in (outcome.answer.reason or "") and outcome.topic == entry.answers_topic
