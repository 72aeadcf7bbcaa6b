"""Rebalances must not double the work: an agent scaled 1 → 2 → 1 replicas (real broker, real
Ray Serve) while queries are in flight loses none, answers each once, and repeats engine work
only for what a revoke cancelled on the replica that lost the partition.

The topology is deployed the way `serve deploy` does it (a Serve config applied by the
controller), and scaled the way an operator scales one agent without restarting it: the
config's `deployments: [{name, num_replicas}]` override. (Changing `replicas:` inside `args`
instead makes Serve replace every replica of the application, since `args` is part of its
code version; so does redeploying through `serve.run`.)

Every engine call is written to a call log by the replay engine (`call_log`), every answer is
read raw from the answers topic, so the numbers below count what happened, not what the
workers say happened. Run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from disrouter.actors.contracts import Query
from disrouter.topology.load import BUILDER
from tests.integration.conftest import AnswerTap, make_trace, replay_agent, topology_args

QUERIES = 128
LATENCY_MS = 1500  # each query holds its slot this long: scale events find work in flight
IN_FLIGHT = 16


async def running_replicas(app: str, want: int, timeout_s: float = 180.0) -> int:
    """Wait until Serve reports exactly `want` running replicas of the agent (and nothing else)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    states: dict = {}
    while asyncio.get_running_loop().time() < deadline:
        status = serve.status().applications.get(app)
        deployment = status.deployments.get("solo") if status else None  # absent while the app builds
        states = deployment.replica_states if deployment else {}
        if states.get("RUNNING", 0) == want and sum(states.values()) == want:
            return want
        await asyncio.sleep(0.2)
    return states.get("RUNNING", 0)


async def settled(calls, timeout_s: float = 60.0) -> None:
    """Wait until every engine call in the log has ended (done or cancelled)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        events = Counter(line.split()[0] for line in calls.read_text().splitlines())
        if events["start"] == events["done"] + events["cancelled"]:
            return
        assert asyncio.get_running_loop().time() < deadline, f"engine calls still running: {events}"
        await asyncio.sleep(0.1)


async def idle(app: str, timeout_s: float = 60.0) -> None:
    """Wait until the agent's (single) replica has nothing in flight."""
    handle = serve.get_deployment_handle("solo", app_name=app)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (await handle.stats.remote())["in_flight"]:
        assert asyncio.get_running_loop().time() < deadline, "the replica never went idle"
        await asyncio.sleep(0.1)


def apply_config(applications: list[dict]) -> None:
    # What `serve deploy config.yaml` does through the dashboard: the controller applies it.
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate({"applications": applications}))


# With the default grace, work in flight at a rebalance mostly finishes before its partition
# moves; with none, every such query is fenced at once, which exercises the fence under Serve.
@pytest.mark.parametrize("grace", [None, 0.0], ids=["default-grace", "fence-at-once"])
async def test_scaling_one_two_one_loses_nothing_and_repeats_only_cancelled_work(
    ray_serve, client_factory, kafka_bootstrap, namespace, tmp_path, grace
):
    ids = [f"s{i}" for i in range(QUERIES)]
    calls = tmp_path / "calls.log"
    trace = make_trace(tmp_path / "t.jsonl", {qid: {"solo": {"latency_ms": LATENCY_MS}} for qid in ids})
    solo = replay_agent("solo", 0.5, trace, max_in_flight=IN_FLIGHT)
    solo["engine"].update(simulate_latency=True, call_log=str(calls))
    args = topology_args(namespace, kafka_bootstrap, [solo], partitions=4,
                         **({} if grace is None else {"timeouts": {"rebalance_grace_s": grace}}))

    def scale(replicas: int) -> None:
        apply_config([{"name": namespace, "route_prefix": f"/{namespace}", "import_path": BUILDER, "args": args,
                       "deployments": [{"name": "solo", "num_replicas": replicas}]}])

    scale(1)
    try:
        assert await running_replicas(namespace, 1) == 1
        async with AnswerTap(kafka_bootstrap, f"{namespace}.answers") as tap:
            async with client_factory(namespace) as client:
                for qid in ids:
                    await client.send(Query(id=qid, prompt=f"prompt of {qid}"))
            await tap.until(24)
            scale(2)
            assert await running_replicas(namespace, 2) == 2
            await tap.until(72)
            scale(1)
            assert await running_replicas(namespace, 1) == 1
            await tap.until(QUERIES)
            # Every engine call over (done or cut) and the one replica left idle: nothing more
            # will be published. Then read the answers topic to its end, copies included.
            await settled(calls)
            await idle(namespace)
            await tap.caught_up()
            answers = Counter(tap.ids)
    finally:
        apply_config([])  # removes the applications deployed by config (this one)

    lines = [line.split() for line in calls.read_text().splitlines()]
    starts = Counter(qid for event, _, qid, _ in lines if event == "start")
    cancelled = Counter(qid for event, _, qid, _ in lines if event == "cancelled")
    callers = {qid: [pid for event, _, q, pid in lines if q == qid and event == "start"] for qid in starts}  # in order
    lost = [qid for qid in ids if qid not in answers]
    duplicate_answers = sum(n - 1 for n in answers.values())
    duplicate_calls = sum(n - 1 for n in starts.values())
    # A repeated call whose earlier run was not cut mid-generation finished while fenced and was
    # thrown away unpublished when its partition moved; both count as work cancelled on the old owner.
    print(f"\n[rescale 1→2→1, {'default grace' if grace is None else f'grace {grace:g} s'}] queries={QUERIES} lost={len(lost)} duplicate_answers={duplicate_answers} "
          f"engine_calls={sum(starts.values())} duplicate_engine_calls={duplicate_calls} "
          f"(cut mid-generation: {sum(cancelled.values())}, finished but discarded: {duplicate_calls - sum(cancelled.values())}) "
          f"replicas={len({pid for *_, pid in lines})}")
    assert len({pid for *_, pid in lines}) == 2, "scaled in place: the first replica kept, one added then removed"
    assert lost == [], "no query lost"
    assert set(starts) == set(ids)
    assert duplicate_answers == 0, f"answers published twice: {[q for q, n in answers.items() if n > 1]}"
    # Work is done again only by the replica a partition moved to, after the old owner's run was
    # cancelled: never twice in a row by one replica (a partition that comes back is resumed,
    # not re-read).
    again = {qid: pids for qid, pids in callers.items() if any(a == b for a, b in zip(pids, pids[1:]))}
    assert again == {}, f"queries run twice in a row by one replica: {again}"
