"""Agents' Prometheus metrics, scraped from the real Ray node's metrics endpoint while a replay
chain under Ray Serve answers queries from the real broker: the counters move."""

from __future__ import annotations

import asyncio

from disrouter.actors.contracts import Query
from tests.integration.conftest import make_trace, metrics_until, replay_agent, scrape_metrics, topology_args


async def test_agent_counters_move_on_the_scraped_endpoint(deploy_topology, client_factory, kafka_bootstrap, namespace,
                                                           tmp_path, metrics_port):
    outcomes = {f"q{i}": {"small": {"decision": "reject" if i % 2 else "answer"}, "large": {"decision": "answer"}} for i in range(6)}
    trace = make_trace(tmp_path / "trace.jsonl", outcomes)
    deploy_topology(topology_args(namespace, kafka_bootstrap, [
        replay_agent("small", 0.1, trace, ["large"]),
        replay_agent("large", 0.9, trace),
    ]))
    async with client_factory(namespace) as client:
        for qid in outcomes:
            await client.send(Query(id=qid, prompt=f"prompt of {qid}", scenario="cost_first"))
        await client.send(b"not json", key="bad")  # dead-lettered by the entry agent
        answers = await client.collect(f"{namespace}.answers", len(outcomes))
    assert len(answers) == 6

    want = {
        "ray_disrouter_agent_consumed_total{agent=small}": 7,
        "ray_disrouter_agent_answered_total{agent=small}": 3,
        "ray_disrouter_agent_rejected_total{agent=small}": 3,
        "ray_disrouter_agent_dead_lettered_total{agent=small}": 1,
        "ray_disrouter_agent_consumed_total{agent=large}": 3,
        "ray_disrouter_agent_answered_total{agent=large}": 3,
        "ray_disrouter_query_answers_total{agent=small,scenario=cost_first,status=answered}": 3,
        "ray_disrouter_query_answers_total{agent=large,scenario=cost_first,status=answered}": 3,
        # 10 tokens in, 5 out per hop (the trace): small's 6 hops, large's 3.
        "ray_disrouter_agent_tokens_total{agent=small,direction=out}": 30,
        "ray_disrouter_agent_tokens_total{agent=large,direction=in}": 30,
        "ray_disrouter_query_hops_count{agent=large,scenario=cost_first,status=answered}": 3,
        "ray_disrouter_query_hops_sum{agent=large,scenario=cost_first,status=answered}": 6,
        "ray_disrouter_query_hops_bucket{agent=large,le=2.5,scenario=cost_first,status=answered}": 3,
        "ray_disrouter_query_hops_bucket{agent=small,le=1.5,scenario=cost_first,status=answered}": 3,
        "ray_disrouter_query_visits_total{agent=large,scenario=cost_first,status=answered}": 6,
        "ray_disrouter_agent_decision_latency_ms_count{agent=small,decision=reject}": 3,
        "ray_disrouter_query_cost_total{agent=large,scenario=cost_first,status=answered}": 2.7,
    }
    samples = await metrics_until(metrics_port, namespace, want)
    wrong = {k: (samples.get(k), v) for k, v in want.items() if abs(samples.get(k, -1.0) - v) > 1e-6}
    assert wrong == {}, wrong  # {sample: (scraped, expected)}
    assert samples["ray_disrouter_query_hops_bucket{agent=large,le=1.5,scenario=cost_first,status=answered}"] == 0
    # Lag is reported per partition of each input topic, and nothing is left behind. The gauge is
    # sampled every few seconds, so on a loaded machine the first scrape may predate the commits.
    def small_lags(samples: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in samples.items() if k.startswith("ray_disrouter_agent_consumer_lag{agent=small")}

    for _ in range(60):
        lags = small_lags(samples)
        if len(lags) == 4 and set(lags.values()) == {0.0}:
            break
        await asyncio.sleep(1.0)
        samples = await asyncio.to_thread(scrape_metrics, metrics_port, namespace)
    lags = small_lags(samples)
    assert len(lags) == 4 and set(lags.values()) == {0.0}, lags  # ingress + agent topic, 2 partitions each
