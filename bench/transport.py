"""Transport benchmark: replay agents over a real broker and real Ray Serve vs the engine alone.

    python -m disrouter.bench.transport --queries 2000 --concurrency 256

Starts its own Tansu broker and a local Ray instance (127.0.0.1, free ports), deploys a chain
of three replay agents, pushes the same queries (a) straight through the Agent decision code
with the replay engines in-process (the baseline: no Kafka, no Serve) and (b) through the
deployed topology over Kafka, and prints both throughputs, their ratio and latency percentiles.
Every loop is bounded by --queries and --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
from tqdm import tqdm

from disrouter.actors.agent import Agent, Final, Forward
from disrouter.actors.contracts import Query
from disrouter.actors.engine import build_engine
from disrouter.actors.logs import configure_logging
from disrouter.actors.trace import TraceRecord, write_trace
from disrouter.client.sdk import Client
from disrouter.stack.supervisor import Broker, free_port
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology

AGENTS = (("small", 0.1), ("medium", 0.4), ("large", 0.9))


def make_trace(path: Path, n: int) -> None:
    """Query i is answered by small if i % 3 == 0, by medium if i % 3 == 1, else by large."""
    records = []
    for i in range(n):
        for rank, (agent, _) in enumerate(AGENTS):
            decision = "answer" if rank >= i % 3 else "reject"
            records.append(TraceRecord(query_id=f"f{i}", agent=agent, correct=True, answer=str(i),
                                       decision=decision, tokens_in=20, tokens_out=4))
    write_trace(path, records)


def topology_args(namespace: str, bootstrap: str, trace: Path, partitions: int, in_flight: int) -> dict:
    agents = []
    for i, (name, cost) in enumerate(AGENTS):
        agent = {"name": name, "cost": cost, "engine": {"type": "replay", "trace": str(trace)},
                 "max_in_flight": in_flight}
        if i + 1 < len(AGENTS):
            agent["next"] = [AGENTS[i + 1][0]]
        agents.append(agent)
    return {"namespace": namespace, "agents": agents,
            "kafka": {"bootstrap_servers": bootstrap, "partitions": partitions, "heartbeat_interval_ms": 500}}


async def direct(args: dict, n: int) -> float:
    """Baseline: the same decision path, engines in-process, hops handed over in memory."""
    topology = parse_topology(args)
    configs = agent_configs(topology)
    agents = {}
    for name, config in configs.items():
        engine = build_engine(config.engine, agent=name)
        await engine.start()
        agents[name] = Agent(config, engine)
    encoder, decoder = msgspec.json.Encoder(), msgspec.json.Decoder(Query)
    start = time.perf_counter()
    for i in range(n):
        query, at = Query(id=f"f{i}", prompt="p"), topology.entry_agent
        while True:
            # Encode/decode each hop as the wire would, so the baseline is not unfairly cheap.
            outcome = await agents[at].process(decoder.decode(encoder.encode(query)))
            if isinstance(outcome, Final):
                encoder.encode(outcome.answer)
                break
            assert isinstance(outcome, Forward)
            query, at = outcome.query, outcome.peer.name
    return n / (time.perf_counter() - start)


async def over_kafka(bootstrap: str, namespace: str, n: int, concurrency: int, timeout_s: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    limiter = asyncio.Semaphore(concurrency)
    async with Client(bootstrap, namespace) as client:
        # Warm-up: one query end to end, so group joins are not counted.
        await client.ask(Query(id="f0", prompt="p"), timeout_s)
        bar = tqdm(total=n, desc="over kafka", unit="q")

        async def one(i: int) -> None:
            async with limiter:
                t0 = time.perf_counter()
                await client.ask(Query(id=f"f{i}", prompt="p"), timeout_s)
                latencies.append((time.perf_counter() - t0) * 1000)
                bar.update()

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - start
        bar.close()
    return n / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-in-flight", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--log-level", default="WARNING", help="agents' log level (INFO logs every hop)")
    opts = parser.parse_args()
    # Same logging set-up in both runs, so the baseline is not measured with a different renderer.
    os.environ["DISROUTER_LOG_LEVEL"] = opts.log_level
    configure_logging()

    import ray
    from ray import serve

    from disrouter.topology.app import build_app

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # The agents sign their hand-offs (actors/trust.py): a key for this run, which the Ray
    # processes started below inherit.
    os.environ.setdefault("DISROUTER_TRUST_KEY", secrets.token_hex(32))
    work = Path(tempfile.mkdtemp(prefix="dr-transport-", dir="/tmp"))
    trace = work / "trace.jsonl"
    make_trace(trace, opts.queries)
    broker = Broker(log_path=work / "tansu.log").start()
    try:
        args = topology_args("transport", broker.bootstrap, trace, opts.partitions, opts.max_in_flight)
        baseline = asyncio.run(direct(args, opts.queries))
        # address="local": a cluster of its own, never one already running on the machine.
        ray.init(address="local", num_cpus=8, include_dashboard=False, _temp_dir=str(work / "ray"), log_to_driver=False,
                 runtime_env={"env_vars": {"DISROUTER_LOG_LEVEL": opts.log_level}})
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        serve.run(build_app(parse_topology(args)), name="transport", route_prefix=None)
        rate, latencies = asyncio.run(over_kafka(broker.bootstrap, "transport", opts.queries, opts.concurrency, opts.timeout))
        serve.shutdown()
        ray.shutdown()
    finally:
        broker.stop()
    q = statistics.quantiles(latencies, n=100)
    print(f"queries={opts.queries} concurrency={opts.concurrency} partitions={opts.partitions} "
          f"agents={len(AGENTS)} (1/3 answered at each hop)")
    print(f"baseline (decision path in-process, no Kafka/Serve): {baseline:,.0f} queries/s")
    print(f"over Kafka + Ray Serve:                              {rate:,.0f} queries/s "
          f"(ratio {rate / baseline:.4f})")
    print(f"end-to-end latency ms: p50={q[49]:.1f} p95={q[94]:.1f} p99={q[98]:.1f}")


if __name__ == "__main__":
    main()
