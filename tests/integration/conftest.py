"""Integration fixtures: a real Tansu broker and a real local Ray cluster with Ray Serve.

One broker and one Ray cluster per test session (each start costs seconds); every test deploys
its own topology under its own namespace (so topics, groups and Serve apps never collide) and
deletes it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from disrouter.actors.config import KafkaSpec
from disrouter.actors.contracts import Answer, Query
from disrouter.actors.kafka import GapGuard, ensure_topics, make_consumer, make_producer
from disrouter.stack.supervisor import Broker, free_port

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The hand-off key of every topology deployed here (the default trust spec reads it): set
# before Ray starts, so every replica inherits it, as a cluster's nodes would provide it.
os.environ.setdefault("DISROUTER_TRUST_KEY", secrets.token_hex(32))

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Iterator[Broker]:
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    b = Broker(log_path=log).start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: Broker) -> str:
    return broker.bootstrap


# tests/faults imports these fixtures into its own conftest, which makes pytest hold a second
# session-scoped copy of each: the session's one cluster and its ports live here, once.
_SESSION: dict[str, int] = {}


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """Where the session's Ray node exports Prometheus metrics: http://127.0.0.1:<port>/metrics."""
    return _SESSION.setdefault("metrics_port", free_port())


@pytest.fixture(scope="session")
def ray_serve(metrics_port: int) -> Iterator[int]:
    """One local Ray cluster with Serve for the session; yields Serve's HTTP port (127.0.0.1)."""
    import ray
    from ray import serve

    if ray.is_initialized():  # tests/faults shares this fixture: one cluster per session
        yield _SESSION["http_port"]
        return
    # Ray's unix socket paths must stay short: a temp dir under /tmp, removed afterwards.
    temp_dir = tempfile.mkdtemp(prefix="dr-ray-", dir="/tmp")
    ray.init(
        # A new cluster of our own, always: with no address, Ray would join the one $RAY_ADDRESS
        # or /tmp/ray/ray_current_cluster names, perhaps a stack someone else runs here.
        address="local",
        num_cpus=8,  # logical CPUs: replicas ask for 0.25 each and mostly wait on I/O
        include_dashboard=False,
        _temp_dir=temp_dir,
        namespace=f"disrouter-tests-{uuid.uuid4().hex[:6]}",
        log_to_driver=bool(os.environ.get("DISROUTER_TEST_RAY_LOGS")),
        _metrics_export_port=metrics_port,
    )
    http_port = _SESSION["http_port"] = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    yield http_port
    serve.shutdown()
    ray.shutdown()


def topology_args(namespace: str, bootstrap: str, agents: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "kafka": {"bootstrap_servers": bootstrap, "partitions": extra.pop("partitions", 2),
                  "session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "commit_interval_ms": 100},
        "agents": agents,
        **extra,
    }


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def deploy_topology(ray_serve, kafka_bootstrap) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """Deploy a topology (the Serve args mapping) as its own Serve app; returns the Topology."""
    from ray import serve

    from disrouter.topology.app import build_app
    from disrouter.topology.load import parse_topology

    deployed: list[str] = []

    def deploy(args: dict[str, Any]):
        topology = parse_topology(args)
        serve.run(build_app(topology), name=topology.namespace, route_prefix=None, blocking=False)
        deployed.append(topology.namespace)
        return topology

    yield deploy
    for name in deployed:
        serve.delete(name)


class Client:
    """A producer of queries and a reader of answers / dead letters for one namespace."""

    def __init__(self, bootstrap: str, namespace: str) -> None:
        self.spec = KafkaSpec(bootstrap_servers=bootstrap, partitions=2)
        self.namespace = namespace
        self.encoder = msgspec.json.Encoder()

    async def __aenter__(self) -> Client:
        self.producer = make_producer(self.spec)
        await self.producer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.producer.stop()

    async def send(self, query: Query | dict | bytes, topic: str | None = None, key: str | None = None) -> None:
        value = query if isinstance(query, bytes) else self.encoder.encode(query)
        if key is None and isinstance(query, Query):
            key = query.id
        await self.producer.send_and_wait(topic or f"{self.namespace}.ingress", value, key=key.encode() if key else None)

    async def collect(self, topic: str, want: int, type_: type = Answer, timeout_s: float = 60.0) -> list:
        """Read `want` distinct messages (de-duplicated by id / offset) from the topic."""
        await ensure_topics(self.spec, [topic])
        consumer = make_consumer(self.spec, topic, group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        seen: dict[str, Any] = {}
        try:
            deadline = asyncio.get_running_loop().time() + timeout_s
            while len(seen) < want and asyncio.get_running_loop().time() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for r in records:
                        msg = msgspec.json.decode(r.value, type=type_)
                        key = getattr(msg, "id", None) or f"{r.partition}:{r.offset}"
                        seen.setdefault(key, msg)
        finally:
            await consumer.stop()
        return list(seen.values())


class AnswerTap:
    """Every message of the answers topic, copies included, in arrival order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.spec, self.topic = KafkaSpec(bootstrap_servers=bootstrap), topic
        self.ids: list[str] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> AnswerTap:
        await ensure_topics(self.spec, [self.topic])
        self.consumer = make_consumer(self.spec, self.topic, group_id=None, auto_offset_reset="earliest")
        await self.consumer.start()
        self.gaps = GapGuard(self.consumer)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            for records in (await self.read()).values():
                self.ids += [msgspec.json.decode(r.value, type=Answer).id for r in records]

    async def read(self) -> dict:
        """One fetch; records the broker serves out of order are read again, not skipped."""
        return self.gaps.check(await self.consumer.getmany(timeout_ms=200))

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()

    async def caught_up(self, timeout_s: float = 60.0) -> None:
        """Wait until every message on the topic now has been read (copies included)."""
        tps = sorted(self.consumer.assignment())
        ends = await self.consumer.end_offsets(tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while [await self.consumer.position(tp) for tp in tps] < [ends[tp] for tp in tps]:
            assert asyncio.get_running_loop().time() < deadline, "answers not read back in time"
            await asyncio.sleep(0.05)

    async def until(self, distinct: int, timeout_s: float = 180.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(set(self.ids)) < distinct and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - polls the reader
            await asyncio.sleep(0.1)


@pytest.fixture
def client_factory(kafka_bootstrap):
    return lambda namespace: Client(kafka_bootstrap, namespace)


def scrape_metrics(port: int, namespace: str) -> dict[str, float]:
    """The namespace's `disrouter_*` samples: {'name{label="v",…}': value}, Serve's labels dropped."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(ray_disrouter_\w+)\{(.*)\} ([0-9.e+-]+)$", line)
        if not match or f'namespace="{namespace}"' not in match.group(2):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        keep = {k: v for k, v in labels.items() if k in ("agent", "decision", "direction", "scenario", "status", "le", "topic", "partition", "model", "outcome")}
        key = match.group(1) + "{" + ",".join(f"{k}={v}" for k, v in sorted(keep.items())) + "}"
        samples[key] = samples.get(key, 0.0) + float(match.group(3))
    return samples


async def metrics_until(port: int, namespace: str, want: dict[str, float], timeout_s: float = 90.0) -> dict[str, float]:
    """Scrape until every wanted sample reaches its value (Ray exports every few seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            samples = await asyncio.to_thread(scrape_metrics, port, namespace)
        except OSError:  # the node's metrics agent (re)starting on a loaded machine: ask again
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(1.0)
            continue
        if all(samples.get(k, 0.0) >= v for k, v in want.items()) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(1.0)


TRACE = Path(__file__).resolve().parents[2] / "examples" / "replay-trace.jsonl"


def make_trace(path: Path, outcomes: dict[str, dict[str, dict[str, Any]]], prompts: dict[str, str] | None = None) -> Path:
    """Write a replay trace: outcomes[query_id][agent] = {decision, confidence, correct, ...}."""
    lines = []
    for qid, per_agent in outcomes.items():
        for agent, fields in per_agent.items():
            record = {"query_id": qid, "agent": agent, "correct": fields.get("correct", True),
                      "answer": fields.get("answer", f"{agent}:{qid}"), "tokens_in": 10, "tokens_out": 5,
                      "prompt": (prompts or {}).get(qid, f"prompt of {qid}")}
            record.update({k: v for k, v in fields.items() if k not in record or k in ("correct", "answer")})
            lines.append(msgspec.json.encode(record).decode())
    path.write_text("\n".join(lines) + "\n")
    return path


def replay_agent(name: str, cost: float, trace: Path, next_: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    agent = {"name": name, "cost": cost, "engine": {"type": "replay", "trace": str(trace)}}
    if next_:
        agent["next"] = next_
    agent.update(extra)
    return agent
