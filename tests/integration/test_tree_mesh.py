"""Trees and meshes on the real broker: documented next-hop policies, no loops, hop bounds."""

from disrouter.actors.contracts import Query
from tests.integration.conftest import make_trace, replay_agent, topology_args


async def test_tree_tag_match_policy(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    reject_all_but_large = {"triage": {"decision": "reject"}, "math": {"decision": "answer"},
                            "code": {"decision": "answer"}, "large": {"decision": "answer"}}
    hard_for_math = {"triage": {"decision": "reject"}, "math": {"decision": "reject"},
                     "code": {"decision": "answer"}, "large": {"decision": "answer"}}
    trace = make_trace(tmp_path / "t.jsonl", {"m": reject_all_but_large, "c": reject_all_but_large,
                                              "u": reject_all_but_large, "mh": hard_for_math})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [
        replay_agent("triage", 0.1, trace, ["math", "code"], policy="tag_match"),
        replay_agent("math", 0.5, trace, ["large"], tags=["math"]),
        replay_agent("code", 0.3, trace, ["large"], tags=["code"]),
        replay_agent("large", 0.9, trace),
    ]))
    async with client_factory(namespace) as client:
        await client.send(Query(id="m", prompt="x", tags=["math"]))
        await client.send(Query(id="c", prompt="x", tags=["code", "python"]))
        await client.send(Query(id="u", prompt="x"))  # no tag matches: the cheapest child
        await client.send(Query(id="mh", prompt="x", tags=["math"]))  # math escalates to large
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", 4)}
    paths = {qid: [h.agent for h in a.trail] for qid, a in answers.items()}
    assert paths == {
        "m": ["triage", "math"],
        "c": ["triage", "code"],
        "u": ["triage", "code"],
        "mh": ["triage", "math", "large"],
    }


async def test_mesh_visits_each_peer_once_and_respects_max_hops(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    peers = ["a", "b", "c", "d"]
    everyone_rejects = {p: {"decision": "reject"} for p in peers}
    ids = [f"m{i}" for i in range(12)]
    trace = make_trace(tmp_path / "t.jsonl", {qid: everyone_rejects for qid in ids})
    agents = [replay_agent(p, 0.1 * (i + 1), trace, [q for q in peers if q != p], policy="hash_unvisited")
              for i, p in enumerate(peers)]
    deploy_topology(topology_args(namespace, kafka_bootstrap, agents, max_hops=3, on_exhausted="unanswered"))
    async with client_factory(namespace) as client:
        for qid in ids[:6]:
            await client.send(Query(id=qid, prompt="x"))
        for qid in ids[6:]:  # a query's own bound below the topology's
            await client.send(Query(id=qid, prompt="x", max_hops=2))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", len(ids))}
    assert set(answers) == set(ids)
    for qid, answer in answers.items():
        visited = [h.agent for h in answer.trail]
        assert len(visited) == len(set(visited)), f"{qid} visited an agent twice: {visited}"
        assert len(visited) == (3 if qid in ids[:6] else 2)
        assert visited[0] == "a"  # the entry
        assert answer.status == "unanswered" and "max_hops" in answer.reason
        assert answer.agent is None and answer.cost == 0.0
        assert answer.totals.cost > 0  # what the rejects spent is still reported
    # hash_unvisited spreads queries over peers rather than always taking the first.
    assert len({tuple(h.agent for h in a.trail) for a in answers.values()}) > 1


async def test_mesh_forced_answer_when_peers_run_out(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    peers = ["a", "b", "c"]
    trace = make_trace(tmp_path / "t.jsonl", {"q": {p: {"decision": "reject"} for p in peers}})
    agents = [replay_agent(p, 0.2, trace, [q for q in peers if q != p], policy="first_unvisited") for p in peers]
    deploy_topology(topology_args(namespace, kafka_bootstrap, agents, max_hops=8, on_exhausted="force"))
    async with client_factory(namespace) as client:
        await client.send(Query(id="q", prompt="x"))
        (answer,) = await client.collect(f"{namespace}.answers", 1)
    assert [h.agent for h in answer.trail] == ["a", "b", "c"]
    assert answer.status == "answered" and answer.agent == "c" and answer.forced
