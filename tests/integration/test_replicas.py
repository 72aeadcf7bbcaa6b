"""Two replicas of one agent share its consumer group: partitions split, no query lost."""

import asyncio

from ray import serve

from disrouter.actors.contracts import Query
from tests.integration.conftest import make_trace, replay_agent, topology_args


async def _replica_views(namespace: str, want: int, timeout_s: float = 60.0) -> dict[str, dict]:
    handle = serve.get_deployment_handle("solo", app_name=namespace)
    views: dict[str, dict] = {}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        snap = await handle.stats.remote()
        views[snap["replica"]] = snap
        if len(views) >= want and all(v["assigned"] for v in views.values()):
            assigned = [p for v in views.values() for p in v["assigned"]]
            if len(assigned) == len(set(assigned)):
                return views
        await asyncio.sleep(0.2)
    return views


async def test_two_replicas_split_partitions_and_lose_nothing(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    ids = [f"r{i}" for i in range(200)]
    trace = make_trace(tmp_path / "t.jsonl", {qid: {"solo": {}} for qid in ids})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [replay_agent("solo", 0.5, trace, replicas=2)],
                                  partitions=4))
    views = await _replica_views(namespace, 2)
    assert len(views) == 2, f"expected two replicas, saw {list(views)}"
    partitions = [set(v["assigned"]) for v in views.values()]
    assert all(partitions), "each replica owns some partitions"
    assert not partitions[0] & partitions[1], "a partition belongs to one replica of the group"
    ingress = {p for p in partitions[0] | partitions[1] if p.startswith(f"{namespace}.ingress:")}
    assert ingress == {f"{namespace}.ingress:{i}" for i in range(4)}

    async with client_factory(namespace) as client:
        for qid in ids:  # keyed by id, so the queries spread over all four partitions
            await client.send(Query(id=qid, prompt=f"prompt of {qid}"))
        answers = await client.collect(f"{namespace}.answers", len(ids), timeout_s=90)
    assert sorted(a.id for a in answers) == sorted(ids)
    views = await _replica_views(namespace, 2)
    consumed = {rid: v.get("consumed", 0) for rid, v in views.items()}
    assert all(n > 0 for n in consumed.values()), f"both replicas did work: {consumed}"
    assert sum(consumed.values()) >= len(ids)
