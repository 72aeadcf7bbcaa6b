"""Lag-based autoscaling under real Ray Serve and a real broker: a backlog on an agent's topics
raises its replica count (to the topology's max_replicas) and, once drained, it falls back to
min_replicas. The replicas report their backlog; Serve runs DiSRouter's policy on it."""

from __future__ import annotations

import asyncio

from ray import serve

from disrouter.actors.contracts import Query
from tests.integration.conftest import make_trace, topology_args

QUERIES = 48
WORK_MS = 1500  # each query's engine time: one replica (4 in flight) needs ~18 s for the lot


def running_replicas(app: str, deployment: str) -> int:
    status = serve.status().applications[app].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


async def test_backlog_scales_an_agent_up_and_back_down(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    ids = [f"b{i}" for i in range(QUERIES)]
    trace = make_trace(tmp_path / "trace.jsonl", {q: {"worker": {"decision": "answer", "latency_ms": WORK_MS}} for q in ids})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [{
        "name": "worker", "cost": 0.5, "max_in_flight": 4,
        "engine": {"type": "replay", "trace": str(trace), "simulate_latency": True},
        "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_backlog": 8, "look_back_period_s": 3,
                        "metrics_interval_s": 1, "upscale_delay_s": 1, "downscale_delay_s": 5},
    }]))
    assert running_replicas(namespace, "worker") == 1

    seen = {1}
    async with client_factory(namespace) as client:
        for qid in ids:
            await client.send(Query(id=qid, prompt=f"prompt of {qid}"))
        collecting = asyncio.create_task(client.collect(f"{namespace}.answers", QUERIES, timeout_s=240))
        while not collecting.done():  # the replica count while the backlog drains
            seen.add(running_replicas(namespace, "worker"))
            await asyncio.sleep(0.5)
        answers = collecting.result()
    assert {a.id for a in answers} == set(ids), "every query of the backlog is answered"
    assert max(seen) == 2, f"the backlog never raised the replica count: {sorted(seen)}"

    deadline = asyncio.get_running_loop().time() + 120
    while running_replicas(namespace, "worker") != 1 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - polls Serve
        await asyncio.sleep(0.5)
    assert running_replicas(namespace, "worker") == 1, "the drained agent did not scale back to min_replicas"
