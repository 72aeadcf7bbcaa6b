"""`disrouter eval` live mode end to end: a real Tansu broker, Ray Serve replay agents.

Eight real GSM8K questions through a two-agent chain whose replay trace is written here, so
every expected number is worked by hand from it:

    item  split  small (decision, reply)      large
    0-2   train  answer, right                answer, right
    3     test   answer, right                answer, right
    4-5   test   reject (forced: wrong)       answer, right
    6-7   test   answer, wrong                answer, right
"""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
import yaml

from disrouter.actors.trace import read_trace
from disrouter.cli import main
from disrouter.evaluation.evalset import Chain
from disrouter.evaluation.live import collect, evaluate_run
from disrouter.training.data import load
from tests.integration.conftest import topology_args

pytestmark = pytest.mark.integration

CHAIN = Chain(("small", "large"), (0.1, 0.9))


def items():
    loaded = load("gsm8k", limit=8).items
    return [msgspec.structs.replace(item, split="train" if i < 3 else "test") for i, item in enumerate(loaded)]


def write_trace(path, questions):
    lines = []
    for i, item in enumerate(questions):
        wrong = f"The answer is: {int(item.gold) + 1}"
        small = {"decision": "answer", "answer": f"The answer is: {item.gold}", "correct": True}
        if i in (4, 5):
            small = {"decision": "reject", "answer": wrong, "correct": False}
        elif i in (6, 7):
            small = {"decision": "answer", "answer": wrong, "correct": False}
        for agent, fields in (("small", small), ("large", {"decision": "answer", "answer": f"The answer is: {item.gold}", "correct": True})):
            lines.append({"query_id": f"trace-{i}", "agent": agent, "prompt": item.prompt, "tokens_in": 20, "tokens_out": 4, **fields})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def chain_args(namespace, bootstrap, trace):
    # The trace's query ids differ from the wire ids: the replay engine matches by prompt.
    return topology_args(namespace, bootstrap, [
        {"name": "small", "cost": 0.1, "engine": {"type": "replay", "trace": str(trace)}, "next": ["large"]},
        {"name": "large", "cost": 0.9, "engine": {"type": "replay", "trace": str(trace)}},
    ])


async def test_live_run_records_what_the_deployed_chain_did(deploy_topology, kafka_bootstrap, namespace, tmp_path):
    questions = items()
    deploy_topology(chain_args(namespace, kafka_bootstrap, write_trace(tmp_path / "replay.jsonl", questions)))
    run = await collect(items=questions, chain=CHAIN, namespace=namespace, bootstrap=kafka_bootstrap,
                        alphas=[0.5], out=tmp_path / "live", concurrency=4, timeout_s=120)
    (stats,) = run.phases
    assert (stats.sent, stats.answered, stats.timeouts) == (8, 8, 0)

    rows = read_trace(run.traces["deployed-alpha0.5"])
    visited = {(r.query_id, r.agent): r for r in rows}
    assert len(rows) == 10  # one hop each, two for the two rejected questions
    rejected = visited[(questions[4].id, "small")]
    assert rejected.decision == "reject" and rejected.answer == "I don't know!"
    assert visited[(questions[4].id, "large")].correct is True
    assert visited[(questions[6].id, "small")].correct is False

    evaluation = evaluate_run(run, CHAIN, [0.5], gamma=0.5, seed=0, embedder_factory=None)
    live = next(r for r in evaluation.results if r.method == "disrouter-live")
    # Test questions 3-7: small right on 3; large right on 4, 5; small wrong on 6, 7.
    assert live.n == 5
    assert live.accuracy == pytest.approx(3 / 5)
    assert live.cost == pytest.approx((0.1 + 0.9 + 0.9 + 0.1 + 0.1) / 5)
    assert live.cumulative_cost == pytest.approx((0.1 + 1.0 + 1.0 + 0.1 + 0.1) / 5)
    assert live.routing == {"small": 0.6, "large": 0.4}
    # Without the forced-alone run, the baselines lack other agents' answers and say so.
    assert "oracle" in evaluation.skipped

    # The same through the command line, with the data set's own (hash) split this time.
    args = chain_args(namespace, kafka_bootstrap, tmp_path / "replay.jsonl")
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump({"applications": [{"name": namespace, "import_path": "disrouter.topology.app:build_app", "args": args}]}))
    out = tmp_path / "cli"
    code = await asyncio.to_thread(main, ["eval", "--live", "--topology", str(topology), "--dataset", "gsm8k", "--limit", "8",
                                          "--alphas", "0.5", "--concurrency", "3", "--timeout", "120", "--out", str(out), "--no-plots"])
    assert code == 0
    results = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    test_rows = [i for i, item in enumerate(load("gsm8k", limit=8).items) if item.split == "test"]
    assert results["disrouter-live"]["n"] == len(test_rows)
    assert results["disrouter-live"]["accuracy"] == pytest.approx(sum(i not in (6, 7) for i in test_rows) / len(test_rows))
    assert len(read_trace(out / "live" / "deployed-alpha0.5.jsonl")) == 10


async def test_forced_alone_gives_every_agents_answer_and_the_baselines(deploy_topology, kafka_bootstrap, namespace, tmp_path):
    """Each agent alone, forced to answer (`Query.force_answer`), fills every (query, agent)."""
    questions = items()
    deploy_topology(chain_args(namespace, kafka_bootstrap, write_trace(tmp_path / "replay.jsonl", questions)))
    run = await collect(items=questions, chain=CHAIN, namespace=namespace, bootstrap=kafka_bootstrap,
                        alphas=[0.5], out=tmp_path / "live", concurrency=4, timeout_s=120, forced_alone=True)
    forced = {(r.query_id, r.agent): r.correct for r in read_trace(run.traces["forced"])}
    assert len(forced) == 16
    # With the forced answers in hand, the deployed chain is asked only the five held-out
    # questions the report scores; the training ones keep their forced lines, undecided.
    deployed = next(p for p in run.phases if p.phase.startswith("deployed"))
    assert (deployed.sent, deployed.answered) == (5, 5)
    assert {r.query_id for r in read_trace(run.traces["deployed-alpha0.5"])} == {q.id for q in questions[3:]}
    merged = read_trace(run.traces["trace-alpha0.5"])
    training = {q.id for q in questions[:3]}
    assert len(merged) == 16 and all(r.decision is None for r in merged if r.query_id in training)
    assert [forced[(q.id, "small")] for q in questions] == [True] * 4 + [False] * 4
    assert all(forced[(q.id, "large")] for q in questions)

    evaluation = evaluate_run(run, CHAIN, [0.5], gamma=0.5, seed=0, embedder_factory=None, methods=["oracle", "single-*", "disrouter-live"])
    by = {r.method: r for r in evaluation.results}
    # Oracle on test questions 3-7: small for 3, large for the other four.
    assert by["oracle"].accuracy == 1.0 and by["oracle"].cost == pytest.approx((0.1 + 4 * 0.9) / 5)
    assert by["single-small"].accuracy == pytest.approx(1 / 5)
    assert by["disrouter-live"].accuracy == pytest.approx(3 / 5)
    assert by["disrouter-live"].pct_of_oracle == pytest.approx(100 * (0.6 - 0.5 * 0.42) / (1.0 - 0.5 * 0.74), abs=1e-3)
    # Every other row is compared with the deployed routing on the same five questions.
    assert evaluation.info["reference"] == "disrouter-live" and by["disrouter-live"].versus is None
    versus = by["single-small"].versus
    assert versus is not None and versus.reference == "disrouter-live"
    assert versus.delta == pytest.approx(by["disrouter-live"].utility - by["single-small"].utility, abs=2e-6)

    # The merged trace re-analysed offline gives the live numbers back.
    out = tmp_path / "offline"
    assert main(["eval", run.traces["trace-alpha0.5"], "--agents", "small:0.1,large:0.9", "--alphas", "0.5",
                 "--methods", "oracle,disrouter-recorded", "--out", str(out), "--no-plots"]) == 0
    offline = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    assert offline["disrouter-recorded"]["accuracy"] == by["disrouter-live"].accuracy
    assert offline["disrouter-recorded"]["cost"] == by["disrouter-live"].cost
    assert offline["oracle"]["utility"] == by["oracle"].utility
    # ... and the same paired interval, under the recorded method's offline name.
    assert offline["oracle"]["versus"]["reference"] == "disrouter-recorded"
    assert [offline["oracle"]["versus"][k] for k in ("delta", "low", "high")] == [
        by["oracle"].versus.delta, by["oracle"].versus.low, by["oracle"].versus.high]
