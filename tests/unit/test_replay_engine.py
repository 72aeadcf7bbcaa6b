"""The replay engine: recorded outcomes served as a model would reply."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from disrouter.actors.agent import Agent, Final, Forward
from disrouter.actors.contracts import Query
from disrouter.actors.decision import REJECT_PHRASE, is_reject
from disrouter.actors.engine import EngineRequest, build_engine
from disrouter.actors.engines.replay import ReplayEngine, resolve_path
from disrouter.actors.errors import EngineError, TraceFormatError, UnknownEngine
from disrouter.actors.trace import TraceRecord, parse_lines, read_trace, write_trace
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology

LINES = [
    {"query_id": "easy", "agent": "small", "correct": True, "answer": "4", "decision": "answer",
     "confidence": 0.9, "tokens_in": 10, "tokens_out": 2, "latency_ms": 40, "cost_usd": 1e-5, "prompt": "2+2?"},
    {"query_id": "hard", "agent": "small", "correct": False, "answer": "17", "decision": "reject",
     "confidence": 0.2, "tokens_in": 12, "tokens_out": 3, "prompt": "Prove Fermat."},
    {"query_id": "bare", "agent": "small", "correct": False},  # only the required fields
    {"query_id": "hard", "agent": "large", "correct": True, "answer": "QED", "decision": "answer", "prompt": "Prove Fermat."},
    {"query_id": "nodecision", "agent": "small", "correct": True, "answer": "yes", "extra_field": "tolerated"},
]


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in LINES) + "\n\n")
    return path


async def engine(trace: Path, agent: str = "small", **options) -> ReplayEngine:
    eng = ReplayEngine.from_options(agent=agent, trace=str(trace), **options)
    await eng.start()
    return eng


def req(query_id: str, prompt: str = "?", allow_reject: bool = True) -> EngineRequest:
    return EngineRequest(query_id=query_id, prompt=prompt, alpha=0.5, allow_reject=allow_reject)


async def test_recorded_answer(trace):
    eng = await engine(trace)
    r = await eng.generate(req("easy"))
    assert r.text == "4"
    assert (r.tokens_in, r.tokens_out, r.confidence, r.decision, r.cost_usd) == (10, 2, 0.9, "answer", 1e-5)


async def test_recorded_reject_is_the_reject_phrase(trace):
    eng = await engine(trace)
    r = await eng.generate(req("hard"))
    assert r.text == REJECT_PHRASE and is_reject(r.text)
    assert r.decision == "reject" and r.confidence == 0.2
    assert (r.tokens_in, r.tokens_out) == (12, 3)


async def test_reject_not_allowed_gives_the_recorded_answer(trace):
    eng = await engine(trace)
    r = await eng.generate(req("hard", allow_reject=False))
    assert r.text == "17"
    # the recorded self-assessment still travels: the agent marks the answer forced
    assert r.decision == "reject"


async def test_confidence_mode_gets_the_recorded_answer_text(trace):
    # confidence mode never offers the model the reject (prompting.offers_reject): the agent
    # decides from the probability and, when that says answer, needs the answer text
    eng = await engine(trace)
    r = await eng.generate(EngineRequest(query_id="hard", prompt="?", alpha=0.5, want_confidence=True))
    assert r.text == "17"
    assert r.decision == "reject" and r.confidence == 0.2  # both signals still travel


async def test_confidence_agent_answering_a_recorded_reject_returns_the_answer(trace):
    cfgs = agent_configs(
        parse_topology(
            {
                "namespace": "r",
                "agents": [
                    {"name": "small", "cost": 0.1, "awareness": "confidence", "next": ["large"],
                     "engine": {"type": "replay", "trace": str(trace)}},
                    {"name": "large", "cost": 0.9, "engine": {"type": "replay", "trace": str(trace)}},
                ],
            }
        )
    )
    small = Agent(cfgs["small"], await engine(trace, "small"))
    # confidence 0.2 > (1 − 1.0)^0.5 = 0: with α = 1 the agent answers despite the recorded reject
    out = await small.process(Query(prompt="Prove Fermat.", id="hard", alpha=1.0))
    assert isinstance(out, Final)
    assert out.answer.answer == "17" and not is_reject(out.answer.answer)
    # with α = 0.5 (threshold 0.707) it rejects
    assert isinstance(await small.process(Query(prompt="Prove Fermat.", id="hard")), Forward)


async def test_record_without_answer_text_says_what_is_known(trace):
    eng = await engine(trace)
    r = await eng.generate(req("bare"))
    assert r.text == "[replay small: incorrect]"
    assert not is_reject(r.text)
    assert (r.tokens_in, r.tokens_out, r.confidence, r.decision) == (0, 0, None, None)


async def test_missing_query_rejects_by_default(trace):
    eng = await engine(trace)
    r = await eng.generate(req("unknown"))
    assert r.text == REJECT_PHRASE and r.decision == "reject" and r.confidence == 0.0


async def test_missing_query_errors_when_asked(trace):
    eng = await engine(trace, on_missing="error")
    with pytest.raises(EngineError, match="'unknown'.*'small'"):
        await eng.generate(req("unknown"))


async def test_prompt_fallback_lookup(trace):
    eng = await engine(trace)
    r = await eng.generate(req("some-new-id", prompt="2+2?"))
    assert r.text == "4"
    # the id wins over the prompt
    r = await eng.generate(req("hard", prompt="2+2?"))
    assert r.text == REJECT_PHRASE


async def test_trace_agent_serves_another_agents_lines(trace):
    eng = await engine(trace, agent="big", trace_agent="large")
    r = await eng.generate(req("hard"))
    assert r.text == "QED"
    assert (await eng.generate(req("easy"))).text == REJECT_PHRASE  # large has no "easy" line


async def test_lines_of_other_agents_are_not_served(trace):
    eng = await engine(trace, agent="large")
    assert (await eng.generate(req("easy"))).decision == "reject"  # missing for large


async def test_simulated_latency(trace):
    eng = await engine(trace, simulate_latency=True, latency_scale=2.0)
    started = time.perf_counter()
    await eng.generate(req("easy"))  # 40 ms recorded × 2
    assert time.perf_counter() - started >= 0.078
    plain = await engine(trace)  # no simulation: a dict lookup
    started = time.perf_counter()
    await plain.generate(req("easy"))
    assert time.perf_counter() - started < 0.04


async def test_close_forgets_the_trace(trace):
    eng = await engine(trace)
    await eng.close()
    assert (await eng.generate(req("easy"))).text == REJECT_PHRASE


# --- options and start-up errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"trace": "t.jsonl", "bogus": 1}, "bogus"),
        ({"trace": "t.jsonl", "latency_scale": "fast"}, "latency_scale"),
        ({"trace": "t.jsonl", "on_missing": "ignore"}, "on_missing"),
        ({"trace": "t.jsonl", "simulate_latency": "yes"}, "simulate_latency"),
        ({}, "trace"),
    ],
)
def test_bad_options_name_the_option_and_the_agent(options, needle):
    with pytest.raises(EngineError) as info:
        ReplayEngine.from_options(agent="small", **options)
    assert needle in str(info.value)
    assert "'small'" in str(info.value)


async def test_missing_trace_file(tmp_path):
    eng = ReplayEngine.from_options(agent="small", trace=str(tmp_path / "nope.jsonl"))
    with pytest.raises(EngineError, match="does not exist"):
        await eng.start()


async def test_trace_without_lines_for_the_agent(trace):
    eng = ReplayEngine.from_options(agent="nobody", trace=str(trace))
    with pytest.raises(EngineError, match="no lines for agent 'nobody'"):
        await eng.start()


async def test_build_engine_from_a_topology_mapping(trace):
    eng = build_engine({"type": "replay", "trace": str(trace)}, agent="small")
    assert isinstance(eng, ReplayEngine)
    await eng.start()
    assert (await eng.generate(req("easy"))).text == "4"


def test_build_engine_errors():
    with pytest.raises(UnknownEngine, match="'nope'.*replay"):
        build_engine({"type": "nope"}, agent="a")
    with pytest.raises(UnknownEngine, match="'a'.*needs a 'type'"):
        build_engine({"trace": "x"}, agent="a")


async def test_the_bundled_example_trace_loads_from_the_package():
    path = resolve_path("pkg:disrouter.examples/replay-trace.jsonl")
    assert path.is_file()
    eng = ReplayEngine.from_options(agent="small", trace="pkg:disrouter.examples/replay-trace.jsonl")
    await eng.start()
    r = await eng.generate(req("demo-1"))
    assert r.decision == "reject" and r.text == REJECT_PHRASE


def test_resolve_path_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_path("~/t.jsonl") == tmp_path / "t.jsonl"


# --- replay through the agent ------------------------------------------------------------------


async def test_replay_chain_through_agents(trace):
    cfgs = agent_configs(
        parse_topology(
            {
                "namespace": "r",
                "agents": [
                    {"name": "small", "cost": 0.1, "engine": {"type": "replay", "trace": str(trace)}, "next": ["large"]},
                    {"name": "large", "cost": 0.9, "engine": {"type": "replay", "trace": str(trace)}},
                ],
            }
        )
    )
    small = Agent(cfgs["small"], await engine(trace, "small"))
    large = Agent(cfgs["large"], await engine(trace, "large"))
    out = await small.process(Query(prompt="2+2?", id="easy"))
    assert isinstance(out, Final) and out.answer.answer == "4" and out.answer.agent == "small"
    out = await small.process(Query(prompt="Prove Fermat.", id="hard"))
    assert isinstance(out, Forward) and out.peer.name == "large"
    out = await large.process(out.query)
    assert out.answer.answer == "QED" and out.answer.forced is False
    assert [h.agent for h in out.answer.trail] == ["small", "large"]
    assert out.answer.totals.tokens_in == 12  # large's line records no tokens


# --- the trace format --------------------------------------------------------------------------


def test_trace_round_trip(tmp_path):
    records = [TraceRecord(query_id="q", agent="a", correct=True, confidence=0.5, decision="answer")]
    path = tmp_path / "t.jsonl"
    assert write_trace(path, records) == 1
    assert read_trace(path) == records


@pytest.mark.parametrize(
    ("lines", "line_no", "needle"),
    [
        (['{"query_id": "q", "agent": "a", "correct": true}', "not json"], 2, "not valid JSON"),
        (["", '{"query_id": "q", "agent": "a"}'], 2, "correct"),
        (['{"query_id": "q", "agent": "a", "correct": true, "confidence": 1.5}'], 1, "confidence 1.5"),
        (['{"query_id": "q", "agent": "a", "correct": true, "decision": "maybe"}'], 1, "decision"),
    ],
)
def test_bad_trace_lines_are_named(lines, line_no, needle):
    with pytest.raises(TraceFormatError) as info:
        list(parse_lines(lines, "t.jsonl"))
    assert info.value.line_no == line_no
    assert needle in str(info.value)
    assert str(info.value).startswith(f"t.jsonl:{line_no}:")


async def test_bad_trace_fails_start_with_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"query_id": "q", "agent": "a", "correct": true}\n{oops\n')
    eng = ReplayEngine.from_options(agent="a", trace=str(path))
    with pytest.raises(TraceFormatError, match=":2:"):
        await eng.start()
