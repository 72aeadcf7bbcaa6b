"""One grep follows a query across agents: every replica writes JSON lines, and each line of a
hop carries the query id and the agent (real broker, real Ray Serve, the replicas' own logs)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from disrouter.actors.contracts import Query
from tests.integration.conftest import make_trace, replay_agent, topology_args


def lines_of(query_id: str) -> list[dict]:
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # this session's node
    found = []
    for path in logs.glob("worker-*.err"):
        for line in path.read_text(errors="replace").splitlines():
            if f'"query_id": "{query_id}"' in line:
                found.append(json.loads(line[line.index("{"):]))  # Ray may prefix a line with its tag
    return found


async def test_one_grep_follows_a_query_across_agents(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    qid = f"{namespace}-q"
    trace = make_trace(tmp_path / "trace.jsonl", {qid: {"small": {"decision": "reject"}, "large": {"decision": "answer"}}})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [replay_agent("small", 0.1, trace, ["large"]),
                                                                replay_agent("large", 0.9, trace)]))
    async with client_factory(namespace) as client:
        await client.send(Query(id=qid, prompt="p"))
        assert len(await client.collect(f"{namespace}.answers", 1)) == 1

    deadline = asyncio.get_running_loop().time() + 30
    while True:  # the replicas' stderr reaches its file asynchronously
        seen = {(line["agent"], line["event"], line.get("decision")) for line in lines_of(qid)}
        if {("small", "hop_done", "reject"), ("large", "hop_done", "answered")} <= seen or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert {("small", "hop", "reject"), ("small", "hop_done", "reject"), ("large", "hop", "answer"),
            ("large", "hop_done", "answered")} <= seen, seen
    done = [line for line in lines_of(qid) if line["event"] == "hop_done"]
    assert all(list(line)[:5] == ["timestamp", "level", "event", "query_id", "agent"] for line in done)
    assert all(line["process_ms"] >= 0 and line["publish_ms"] >= 0 for line in done)
    assert {line["to"] for line in done} == {"large", f"{namespace}.answers"}
