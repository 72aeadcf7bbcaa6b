"""A chain of three replay agents on the real broker and real Ray Serve (the paper's setting)."""

import pytest

from disrouter.actors.contracts import Query
from tests.integration.conftest import make_trace, replay_agent, topology_args

COSTS = {"small": 0.1, "medium": 0.4, "large": 0.9}


def _outcomes():
    # q-easy-*: small answers; q-mid-*: small rejects, medium answers; q-hard-*: everyone below
    # the terminal rejects, and q-forced-*: even the terminal would reject (it must answer).
    out = {}
    for i in range(6):
        out[f"q-easy-{i}"] = {"small": {"decision": "answer"}, "medium": {"decision": "answer"}, "large": {"decision": "answer"}}
        out[f"q-mid-{i}"] = {"small": {"decision": "reject"}, "medium": {"decision": "answer"}, "large": {"decision": "answer"}}
        out[f"q-hard-{i}"] = {"small": {"decision": "reject"}, "medium": {"decision": "reject"}, "large": {"decision": "answer"}}
    out["q-forced-0"] = {"small": {"decision": "reject"}, "medium": {"decision": "reject"}, "large": {"decision": "reject"}}
    return out


async def test_chain_routes_by_self_awareness(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    outcomes = _outcomes()
    trace = make_trace(tmp_path / "trace.jsonl", outcomes)
    deploy_topology(topology_args(namespace, kafka_bootstrap, [
        replay_agent("small", COSTS["small"], trace, ["medium"]),
        replay_agent("medium", COSTS["medium"], trace, ["large"]),
        replay_agent("large", COSTS["large"], trace),
    ]))
    async with client_factory(namespace) as client:
        for qid in outcomes:
            await client.send(Query(id=qid, prompt=f"prompt of {qid}"))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", len(outcomes))}

    assert set(answers) == set(outcomes), "every query gets exactly one answer id"
    for qid, per_agent in outcomes.items():
        # The expected path: walk the chain until an agent answers; the terminal always does.
        path = []
        for agent in ("small", "medium", "large"):
            path.append(agent)
            if per_agent[agent]["decision"] == "answer":
                break
        answer = answers[qid]
        assert answer.status == "answered"
        assert [h.agent for h in answer.trail] == path, qid
        assert [h.decision for h in answer.trail] == ["reject"] * (len(path) - 1) + ["answer"]
        assert answer.agent == path[-1]
        assert answer.answer == f"{path[-1]}:{qid}"
        assert answer.cost == COSTS[path[-1]]  # the paper's metric: cost of who answered
        assert answer.totals.cost == pytest.approx(sum(COSTS[a] for a in path))  # cumulative
        assert answer.totals.hops == len(path)
        assert answer.totals.tokens_out == 5 * len(path)
        assert [h.cost for h in answer.trail] == [COSTS[a] for a in path]
        assert answer.forced == (qid == "q-forced-0")
        assert answer.trail[-1].forced == (qid == "q-forced-0")
