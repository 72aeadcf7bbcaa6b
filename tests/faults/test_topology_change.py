"""Topology changes while queries flow: a running chain is redeployed with an agent added between
two of its agents, then redeployed without it while hand-offs still wait on its topic. No query
is lost. The rule for what a removed agent left behind (README, "Topologies"): the entry agent
reads the topics of removed agents from where their group left off and re-routes each query to
the cheapest agent it has not visited, the removed agent recorded in its trail as a reject that
says so.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from tests.faults.conftest import AnswerLog, blast, chain_args, chain_trace, queries, replay_agent, scan, topic_size

BATCH = 300
LATENCY_MS = 20
EXTRA_LATENCY_MS = 300  # the added agent is slow (4 slots): its topic holds a backlog when it is removed
BACKLOG = 40


async def test_an_agent_added_then_removed_under_load_loses_no_query(deploy_topology, kafka_bootstrap, namespace, tmp_path):
    ids = [f"t{i}" for i in range(3 * BATCH)]
    trace = chain_trace(tmp_path / "t.jsonl", ids, latency_ms=LATENCY_MS)
    with trace.open("a") as lines:  # the added agent rejects everything: its queries go on to large
        for qid in ids:
            lines.write(msgspec.json.encode({"query_id": qid, "agent": "extra", "correct": False, "decision": "reject",
                                             "latency_ms": EXTRA_LATENCY_MS, "prompt": f"prompt of {qid}"}).decode() + "\n")
    chain = chain_args(namespace, kafka_bootstrap, trace, engine={"simulate_latency": True},
                       per_agent={name: {"max_in_flight": 16} for name in ("small", "medium", "large")})
    extended = msgspec.json.decode(msgspec.json.encode(chain))
    next(a for a in extended["agents"] if a["name"] == "medium")["next"] = ["extra"]
    extra = replay_agent("extra", 0.6, trace, ["large"], max_in_flight=4)
    extra["engine"]["simulate_latency"] = True
    extended["agents"].insert(2, extra)

    deploy_topology(chain)
    events: list[tuple[str, float, int]] = []
    async with AnswerLog(kafka_bootstrap, f"{namespace}.answers") as tap:
        started = time.perf_counter()

        def event(what: str) -> None:
            events.append((what, round(time.perf_counter() - started, 1), len(set(tap.ids))))

        await blast(kafka_bootstrap, f"{namespace}.ingress", queries(ids[:BATCH]))
        await tap.until(BATCH // 3, timeout_s=120)
        event("redeploy: extra added")
        deploy_topology(extended)
        await blast(kafka_bootstrap, f"{namespace}.ingress", queries(ids[BATCH:2 * BATCH]))
        deadline = time.perf_counter() + 180
        while await topic_size(kafka_bootstrap, f"{namespace}.agent.extra") < BACKLOG:
            assert time.perf_counter() < deadline, "no hand-offs reached the added agent"
            await asyncio.sleep(0.2)
        event("redeploy: extra removed")
        deploy_topology(chain)
        await blast(kafka_bootstrap, f"{namespace}.ingress", queries(ids[2 * BATCH:]))
        await tap.until(len(ids), timeout_s=120)
        event("all answered")
        await asyncio.sleep(2)
        await tap.caught_up()
        answers = list(tap.answers)

    distinct = {a.id: a for a in answers}
    through_extra = [a for a in distinct.values() if any(h.agent == "extra" for h in a.trail)]
    rerouted = [a for a in through_extra if any(h.agent == "extra" and h.error and "removed" in h.error for h in a.trail)]
    print(f"\n[topology change] queries={len(ids)} events={events} answered={len(distinct)} "
          f"duplicate answers={len(answers) - len(distinct)} through extra={len(through_extra)} "
          f"re-routed from its topic after removal={len(rerouted)} "
          f"(trail e.g. {[(h.agent, h.decision) for h in rerouted[0].trail] if rerouted else None})")
    lost = set(ids) - set(distinct)
    on_broker = await scan(kafka_bootstrap, f"{namespace}.answers", lost) if lost else {}
    assert not lost, f"lost: {sorted(lost)[:10]}; read afresh from the answers topic: {on_broker}"
    assert all(a.status == "answered" for a in distinct.values())
    assert rerouted, "queries were waiting on the removed agent's topic, and were re-routed"
    for answer in rerouted:
        assert [h.agent for h in answer.trail][-2:] == ["extra", "large"] and answer.agent == "large"
