"""The fault suite: a 3-agent replay chain on a real broker and real Ray Serve, under load, with
one fault at a time. Each test prints its figures (run with -s); none asserts a duration.

The broker, Ray cluster and per-test namespaces are the integration suite's fixtures (one Ray
cluster per session, shared with tests/integration).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import TopicPartition
from ray import serve

from disrouter.actors.config import KafkaSpec
from disrouter.actors.contracts import Answer, Query
from disrouter.actors.kafka import ensure_topics, make_consumer, make_producer
from tests.integration.conftest import (  # noqa: F401 - fixtures, used by name
    AnswerTap,
    broker,
    client_factory,
    deploy_topology,
    kafka_bootstrap,
    metrics_port,
    namespace,
    ray_serve,
    replay_agent,
)

CHAIN = (("small", 0.1), ("medium", 0.4), ("large", 0.9))


def chain_trace(path: Path, ids: list[str], **fields: Any) -> Path:
    """Query i is answered at hop i % 3 + 1 (small, medium or large); `fields` go on every line."""
    lines = []
    for i, qid in enumerate(ids):
        for rank, (agent, _) in enumerate(CHAIN):
            record = {"query_id": qid, "agent": agent, "correct": True, "answer": f"{agent}:{qid}",
                      "decision": "answer" if rank >= i % 3 else "reject", "tokens_in": 10, "tokens_out": 5,
                      "prompt": f"prompt of {qid}", **fields}
            lines.append(msgspec.json.encode(record).decode())
    path.write_text("\n".join(lines) + "\n")
    return path


def chain_args(ns: str, bootstrap: str, trace: Path, *, engine: dict | None = None, partitions: int = 4,
               per_agent: dict[str, dict] | None = None, **extra: Any) -> dict[str, Any]:
    agents = []
    for i, (name, cost) in enumerate(CHAIN):
        agent = replay_agent(name, cost, trace, [CHAIN[i + 1][0]] if i + 1 < len(CHAIN) else None,
                             **(per_agent or {}).get(name, {}))
        agent["engine"].update(engine or {})
        agents.append(agent)
    return {"namespace": ns, "agents": agents,
            "kafka": {"bootstrap_servers": bootstrap, "partitions": partitions, "session_timeout_ms": 6000,
                      "heartbeat_interval_ms": 500, "commit_interval_ms": 100},
            **extra}


async def blast(bootstrap: str, topic: str, records: list[tuple[str | None, bytes | None]]) -> float:
    """Produce (key, value) records as fast as the client batches them; returns the seconds taken."""
    spec = KafkaSpec(bootstrap_servers=bootstrap)
    await ensure_topics(spec, [topic])
    producer = make_producer(spec)
    await producer.start()
    try:
        started = time.perf_counter()
        sent = [await producer.send(topic, value, key=key.encode() if key else None) for key, value in records]
        await asyncio.gather(*sent)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def queries(ids: list[str]) -> list[tuple[str | None, bytes | None]]:
    encoder = msgspec.json.Encoder()
    return [(qid, encoder.encode(Query(id=qid, prompt=f"prompt of {qid}"))) for qid in ids]


async def replicas(app: str, agent: str, want: int = 1, timeout_s: float = 120.0) -> dict[int, dict]:
    """The agent's replicas as {pid: stats}, once `want` of them answer (a handle call reaches
    one replica at a time, so ask until each has been seen)."""
    handle = serve.get_deployment_handle(agent, app_name=app)
    seen: dict[int, dict] = {}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(seen) < want:
        assert asyncio.get_running_loop().time() < deadline, f"{agent}: {len(seen)} of {want} replicas answered"
        try:
            stats = await handle.stats.remote()
        except Exception:  # noqa: BLE001 - a replica just killed or replaced: ask again
            await asyncio.sleep(0.5)
            continue
        seen[int(stats["replica"].rsplit(":", 1)[1])] = stats
    return seen


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class AnswerLog(AnswerTap):
    """An AnswerTap that keeps every answer whole (trail included), copies too."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.answers: list[Answer] = []

    async def _read(self) -> None:
        while True:
            for records in (await self.read()).values():
                for record in records:
                    answer = msgspec.json.decode(record.value, type=Answer)
                    self.answers.append(answer)
                    self.ids.append(answer.id)


async def topic_size(bootstrap: str, topic: str) -> int:
    """Records on a topic, by its partitions' end offsets (Tansu reports the start of a
    partition's last record batch there, so this may count low, never high)."""
    probe = make_consumer(KafkaSpec(bootstrap_servers=bootstrap), group_id=None)
    await probe.start()
    try:
        await probe.topics()
        tps = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or ())]
        return sum((await probe.end_offsets(tps)).values()) if tps else 0
    finally:
        await probe.stop()


async def scan(bootstrap: str, topic: str, ids: set[str], idle_s: float = 3.0) -> dict[str, int]:
    """How many times each of `ids` is on the topic, read afresh from the beginning (to tell a
    reader that missed a message from a broker that lost it)."""
    consumer = make_consumer(KafkaSpec(bootstrap_servers=bootstrap), group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found = dict.fromkeys(ids, 0)
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        quiet = 0.0
        while quiet < idle_s:
            batches = await consumer.getmany(timeout_ms=200)
            quiet = 0.0 if batches else quiet + 0.2
            for records in batches.values():
                for record in records:
                    qid = msgspec.json.decode(record.value, type=Answer).id
                    if qid in found:
                        found[qid] += 1
        return found
    finally:
        await consumer.stop()
