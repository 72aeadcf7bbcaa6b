"""Fabric benchmark: the agents' Kafka + Ray Serve fabric measured against the broker's floor.

    python -m disrouter.bench.fabric --queries 20000

One run, one broker (its own Tansu, memory storage, on 127.0.0.1) and one table:

- floor: bare aiokafka on that broker, with the agents' own client settings: a message
  produced then consumed, one at a time (round trip p50/p99, the least one hop can cost), and
  the raw produce+consume rate (one process: batched sends, a consumer reading alongside);
- baseline: the same decision path in-process (replay engines, no Kafka, no Serve);
- reject hop: queries answered at hop 1 and at hop 3 of a chain of three replay agents with no
  simulated latency, one at a time; a reject hop costs (end-to-end at 3 − at 1) / 2, shown as a
  multiple of the floor's round trip;
- throughput: --queries queries, --concurrency in flight (a closed loop: each sender sends its
  next query once its last is answered), every one answered, as a fraction of the raw rate (one
  query is three messages on average: ingress, one hand-off, the answer);
- scaling: the throughput run again with the busiest agent (the entry, which sees every query)
  at more replicas, and with more partitions.

Every loop is bounded by --queries and --timeout. Figures from a shared machine move with its
load: compare the ratios, which are measured against a floor taken in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import TopicPartition

from disrouter.actors import heap
from disrouter.actors.agent import Agent, Final, Forward
from disrouter.actors.config import KafkaSpec
from disrouter.actors.contracts import Query
from disrouter.actors.engine import build_engine
from disrouter.actors.kafka import ensure_topics, make_consumer, make_producer
from disrouter.actors.logs import configure_logging
from disrouter.actors.trace import TraceRecord, write_trace
from disrouter.bench.load import closed_loop
from disrouter.client.sdk import Client
from disrouter.stack.supervisor import Broker, free_port
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology

AGENTS = (("small", 0.1), ("medium", 0.4), ("large", 0.9))
# Messages one query costs the broker on average, 1/3 answered at each hop: the ingress, one
# hand-off, the answer.
MESSAGES_PER_QUERY = 3


def make_trace(path: Path, n: int) -> None:
    """Query i is answered by small if i % 3 == 0, by medium if i % 3 == 1, else by large."""
    records = []
    for i in range(n):
        for rank, (agent, _) in enumerate(AGENTS):
            decision = "answer" if rank >= i % 3 else "reject"
            records.append(TraceRecord(query_id=f"f{i}", agent=agent, correct=True, answer=str(i),
                                       decision=decision, tokens_in=20, tokens_out=4))
    write_trace(path, records)


def topology_args(namespace: str, bootstrap: str, trace: Path, partitions: int, in_flight: int, entry_replicas: int = 1) -> dict:
    agents = []
    for i, (name, cost) in enumerate(AGENTS):
        agent: dict[str, Any] = {"name": name, "cost": cost, "engine": {"type": "replay", "trace": str(trace)},
                                 "max_in_flight": in_flight}
        if i + 1 < len(AGENTS):
            agent["next"] = [AGENTS[i + 1][0]]
        if i == 0:
            agent["replicas"] = entry_replicas
        agents.append(agent)
    return {"namespace": namespace, "agents": agents,
            "kafka": {"bootstrap_servers": bootstrap, "partitions": partitions, "heartbeat_interval_ms": 500}}


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


# --- the floor: the broker alone -----------------------------------------------------------------


async def floor(spec: KafkaSpec, namespace: str, pings: int, messages: int, broker_pid: int) -> tuple[list[float], float, Cpu]:
    """(round-trip ms of `pings` messages one at a time, raw produce+consume messages/s, the CPU
    the broker and this process spent on the raw rate)."""
    value = msgspec.json.encode(Query(id="f0", prompt="p" * 64, scenario="balance"))
    rtt_topic, rate_topic = f"{namespace}.floor.rtt", f"{namespace}.floor.rate"
    await ensure_topics(spec, [rtt_topic, rate_topic])
    producer = make_producer(spec)
    await producer.start()
    try:
        consumer = await _reader(spec, rtt_topic)
        try:
            await producer.send_and_wait(rtt_topic, value, key=b"warm-up")
            await _read(consumer, 1, 30.0)
            rtts = []
            for i in range(pings):
                t0 = time.perf_counter()
                await producer.send_and_wait(rtt_topic, value, key=f"f{i}".encode())
                await _read(consumer, 1, 30.0)
                rtts.append((time.perf_counter() - t0) * 1000)
        finally:
            await consumer.stop()
        consumer = await _reader(spec, rate_topic)
        pids = {"client": os.getpid(), "broker": broker_pid}
        try:
            start = Cpu.measure_from(pids)
            t0 = time.perf_counter()
            reading = asyncio.create_task(_read(consumer, messages, 120.0))
            sent = [await producer.send(rate_topic, value, key=f"f{i}".encode()) for i in range(messages)]
            await asyncio.gather(*sent)
            await reading
            rate = messages / (time.perf_counter() - t0)
            cpu = Cpu.since(start, pids)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    return rtts, rate, cpu


async def _reader(spec: KafkaSpec, topic: str):
    consumer = make_consumer(spec, group_id=None)
    await consumer.start()
    parts = consumer.partitions_for_topic(topic)
    while not parts:
        await asyncio.sleep(0.05)
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    return consumer


async def _read(consumer, want: int, timeout_s: float) -> None:
    got, deadline = 0, time.monotonic() + timeout_s
    while got < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the floor read {got} of {want} messages in {timeout_s:g} s")
        batches = await consumer.getmany(timeout_ms=100)
        got += sum(len(records) for records in batches.values())


# --- the baseline: the decision path in-process ---------------------------------------------------


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


# --- the fabric: the chain over Kafka + Serve -----------------------------------------------------


class Run(msgspec.Struct):
    rate: float
    latencies: list[float]
    answered: int
    sent: int
    cpu: Cpu | None = None


async def hop_latency(client: Client, samples: int, timeout_s: float) -> dict[int, list[float]]:
    """End-to-end ms of queries answered at hop 1 (ids ≡ 0 mod 3) and hop 3 (≡ 2), one at a time."""
    by_hops: dict[int, list[float]] = {1: [], 3: []}
    for i in range(3, 3 + 3 * samples):
        hops = i % 3 + 1
        if hops not in by_hops:
            continue
        t0 = time.perf_counter()
        answer = await client.ask(Query(id=f"f{i}", prompt="p"), timeout_s)
        assert len(answer.trail) == hops, (answer.id, [h.agent for h in answer.trail])
        by_hops[hops].append((time.perf_counter() - t0) * 1000)
    return by_hops


async def agent_stats(namespace: str) -> list[dict]:
    from ray import serve

    return [await serve.get_deployment_handle(name, app_name=namespace).stats.remote() for name, _ in AGENTS]


async def throughput(client: Client, namespace: str, first: int, n: int, concurrency: int, timeout_s: float) -> Run:
    latencies: list[float] = []
    answered = 0

    async def watch() -> None:
        # A run that stops making progress says where the queries are, rather than only timing out.
        seen, quiet = -1, 0
        while True:
            await asyncio.sleep(5)
            quiet = quiet + 5 if len(latencies) == seen else 0
            seen = len(latencies)
            if quiet >= 10:
                print(f"no answer for {quiet} s ({seen} of {n}); agents: {await agent_stats(namespace)}", flush=True)

    async def one(i: int) -> None:
        nonlocal answered
        t0 = time.perf_counter()
        answer = await client.ask(Query(id=f"f{i}", prompt="p"), timeout_s)
        latencies.append((time.perf_counter() - t0) * 1000)
        answered += answer.status == "answered"

    start = time.perf_counter()
    watcher = asyncio.create_task(watch())
    try:
        await closed_loop(range(first, first + n), concurrency, one)
    finally:
        watcher.cancel()
    return Run(n / (time.perf_counter() - start), latencies, answered, n)


async def fabric(bootstrap: str, broker_pid: int, namespace: str, opts, *, latency: bool) -> tuple[Run, dict[int, list[float]]]:
    async with Client(bootstrap, namespace) as client:
        # Warm-up: one query down the whole chain, so group joins are not counted.
        await client.ask(Query(id="f2", prompt="p"), opts.timeout)
        # This process is the client: settled as a long-lived client process should be
        # (`actors/heap.py`; the floor was measured with the same settings), as the agents'
        # replicas are (Serve freezes their start-up, `AgentDeployment` tunes the threshold).
        heap.settle()
        hops = await hop_latency(client, opts.hop_samples, opts.timeout) if latency else {}
        first = 3 + 3 * opts.hop_samples  # fresh ids: the client matches answers by id
        pids = {stats["agent"]: int(stats["replica"].rsplit(":", 1)[1]) for stats in await agent_stats(namespace)}
        pids.update(client=os.getpid(), broker=broker_pid)
        profilers = start_profilers(pids, Path(opts.profile)) if opts.profile and latency else []
        start = Cpu.measure_from(pids)
        try:
            run = await throughput(client, namespace, first, opts.queries, opts.concurrency, opts.timeout)
        finally:
            for proc in profilers:  # py-spy writes its profile on SIGINT
                proc.send_signal(signal.SIGINT)
            for proc in profilers:
                proc.wait(timeout=60)
        run.cpu = Cpu.since(start, pids)
        return run, hops


def start_profilers(targets: dict[str, int], out: Path) -> list[subprocess.Popen]:
    """py-spy on every agent replica and on this driver (the client) for the throughput run:
    sampled without pausing them (--nonblocking), written as raw collapsed stacks."""
    out.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return [subprocess.Popen([py_spy, "record", "--nonblocking", "--rate", "200", "--format", "raw", "-p", str(pid),  # noqa: S603
                              "-o", str(out / f"{name}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in targets.items() if name != "broker"]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each process has used so far, from /proc (Linux)."""
    out = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            out[name] = float("nan")
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every process of every user."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), sum(ticks) / os.sysconf("SC_CLK_TCK")


class Cpu(msgspec.Struct):
    """CPU seconds spent per process over one phase, and how busy the machine was."""

    per_process: dict[str, float]
    machine_busy: float
    machine_total: float

    @classmethod
    def measure_from(cls, pids: dict[str, int]) -> tuple[dict[str, float], tuple[float, float]]:
        return cpu_seconds(pids), machine_cpu()

    @classmethod
    def since(cls, start: tuple[dict[str, float], tuple[float, float]], pids: dict[str, int]) -> Cpu:
        before, (busy0, total0) = start
        after, (busy1, total1) = cpu_seconds(pids), machine_cpu()
        return cls({k: after[k] - before[k] for k in pids}, busy1 - busy0, total1 - total0)


def deploy_and_run(broker: Broker, trace: Path, opts, replicas: int, partitions: int, latency: bool):
    from ray import serve

    from disrouter.topology.app import build_app

    namespace = f"fabric-r{replicas}-p{partitions}"
    args = topology_args(namespace, broker.bootstrap, trace, partitions, opts.max_in_flight, replicas)
    serve.run(build_app(parse_topology(args)), name=namespace, route_prefix=None)
    assert broker.proc is not None
    try:
        return asyncio.run(fabric(broker.bootstrap, broker.proc.pid, namespace, opts, latency=latency))
    finally:
        serve.delete(namespace)


def parse_counts(text: str) -> list[int]:
    """`--scale-replicas 2,4` → [2, 4]; an empty value runs none."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = [0]
    if any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"expected counts ≥ 1 separated by commas, such as 2,4 (or nothing for none), got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000, help="queries per throughput run")
    # Enough in flight to saturate the chain: at 256 it is bound by in flight / latency (Little's
    # law), with the machine a fifth idle, and a throughput bound is read at saturation.
    parser.add_argument("--concurrency", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-in-flight", type=int, default=512, help="each agent's max_in_flight")
    parser.add_argument("--hop-samples", type=int, default=100, help="queries at each hop count for the hop latency")
    parser.add_argument("--pings", type=int, default=300, help="messages for the floor's round trip")
    parser.add_argument("--floor-messages", type=int, default=20000, help="messages for the floor's raw rate")
    parser.add_argument("--scale-replicas", type=parse_counts, default="2,4", help="entry-agent replica counts to run again (empty: none)")
    parser.add_argument("--scale-partitions", type=parse_counts, default="8", help="partition counts to run again (empty: none)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--profile", metavar="DIR", help="py-spy the agents and the client during the main throughput run")
    parser.add_argument("--log-level", default="WARNING", help="agents' log level (INFO logs every hop)")
    opts = parser.parse_args()
    # Same logging set-up in both runs, so the baseline is not measured with a different renderer.
    os.environ["DISROUTER_LOG_LEVEL"] = opts.log_level
    configure_logging()

    import ray
    from ray import serve

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # The agents sign their hand-offs (actors/trust.py): a key for this run, which the Ray
    # processes started below inherit.
    os.environ.setdefault("DISROUTER_TRUST_KEY", secrets.token_hex(32))
    work = Path(tempfile.mkdtemp(prefix="dr-fabric-", dir="/tmp"))
    trace = work / "trace.jsonl"
    make_trace(trace, 3 + 3 * opts.hop_samples + opts.queries)
    variants = [(1, opts.partitions)] + [(r, opts.partitions) for r in opts.scale_replicas if r != 1] \
        + [(1, p) for p in opts.scale_partitions if p != opts.partitions]
    broker = Broker(log_path=work / "tansu.log").start()
    runs: dict[tuple[int, int], Run] = {}
    try:
        spec = KafkaSpec(bootstrap_servers=broker.bootstrap, partitions=opts.partitions)
        heap.settle()  # as for the chain's client below: the floor's client gets the same collector
        assert broker.proc is not None
        rtts, raw, floor_cpu = asyncio.run(floor(spec, "fabric", opts.pings, opts.floor_messages, broker.proc.pid))
        baseline = asyncio.run(direct(topology_args("fabric", broker.bootstrap, trace, opts.partitions, 1), opts.queries))
        # address="local": a cluster of its own, never one already running on the machine.
        ray.init(address="local", num_cpus=8, include_dashboard=False, _temp_dir=str(work / "ray"), log_to_driver=False,
                 runtime_env={"env_vars": {"DISROUTER_LOG_LEVEL": opts.log_level}})
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        hops: dict[int, list[float]] = {}
        for replicas, partitions in variants:
            runs[(replicas, partitions)], measured = deploy_and_run(
                broker, trace, opts, replicas, partitions, latency=not hops)
            hops = hops or measured
        serve.shutdown()
        ray.shutdown()
    finally:
        broker.stop()

    rtt50, rtt99 = pct(rtts, 50), pct(rtts, 99)
    hop50 = (pct(hops[3], 50) - pct(hops[1], 50)) / 2
    hop99 = (pct(hops[3], 99) - pct(hops[1], 99)) / 2
    main_run = runs[(1, opts.partitions)]
    print(f"fabric: 3 replay agents in a chain (1/3 answered at each hop, no simulated latency), one Tansu broker "
          f"(memory) on 127.0.0.1, {os.cpu_count()} CPUs; queries={opts.queries} concurrency={opts.concurrency} "
          f"max_in_flight={opts.max_in_flight}")
    rows = [
        ("floor: produce→consume round trip", f"p50 {rtt50:.1f} ms  p99 {rtt99:.1f} ms", "1×"),
        ("floor: raw produce+consume rate", f"{raw:,.0f} msg/s", "1×"),
        ("decision path in-process (no Kafka/Serve)", f"{baseline:,.0f} q/s", ""),
        ("end to end, answered at hop 1", f"p50 {pct(hops[1], 50):.1f} ms  p99 {pct(hops[1], 99):.1f} ms",
         f"{pct(hops[1], 50) / rtt50:.2f}× / {pct(hops[1], 99) / rtt99:.2f}× floor"),
        ("end to end, answered at hop 3", f"p50 {pct(hops[3], 50):.1f} ms  p99 {pct(hops[3], 99):.1f} ms",
         f"{pct(hops[3], 50) / rtt50:.2f}× / {pct(hops[3], 99) / rtt99:.2f}× floor"),
        ("per reject hop (goal ≤ 1.3× floor)", f"p50 {hop50:.1f} ms  p99 {hop99:.1f} ms",
         f"{hop50 / rtt50:.2f}× / {hop99 / rtt99:.2f}× floor"),
    ]
    for (replicas, partitions), run in runs.items():
        label = "chain throughput (goal ≥ 0.25 of raw)" if run is main_run else f"  entry replicas={replicas} partitions={partitions}"
        if run is main_run:
            label += f" replicas=1 partitions={partitions}"
        rows.append((label, f"{run.rate:,.0f} q/s, answered {run.answered}/{run.sent}, "
                            f"p50 {pct(run.latencies, 50):.0f} ms p99 {pct(run.latencies, 99):.0f} ms",
                     f"{run.rate / raw:.3f} of raw ({run.rate * MESSAGES_PER_QUERY / raw:.2f} in messages); "
                     f"{run.rate / baseline:.3f} of in-process"))
    floor_us = sum(floor_cpu.per_process.values()) / opts.floor_messages * 1e6
    rows.append(("floor: CPU per message (broker + client)",
                 f"{floor_us:.0f} µs (broker {floor_cpu.per_process['broker'] / opts.floor_messages * 1e6:.0f}, "
                 f"client {floor_cpu.per_process['client'] / opts.floor_messages * 1e6:.0f})",
                 f"machine {floor_cpu.machine_busy / floor_cpu.machine_total:.0%} busy"))
    if main_run.cpu is not None:
        cpu = main_run.cpu
        per_query = {name: seconds / main_run.sent * 1e6 for name, seconds in cpu.per_process.items()}
        rows.append(("chain: CPU per query (all its processes)",
                     f"{sum(per_query.values()):.0f} µs (" + ", ".join(f"{k} {v:.0f}" for k, v in per_query.items()) + ")",
                     # A short floor (a smoke run) can use less CPU than the clock's 10 ms tick shows.
                     (f"{sum(per_query.values()) / (MESSAGES_PER_QUERY * floor_us):.1f}× the floor's {MESSAGES_PER_QUERY} messages"
                      if floor_us else "the floor's CPU below the clock's tick")
                     + f"; machine {cpu.machine_busy / cpu.machine_total:.0%} busy, "
                     f"{sum(cpu.per_process.values()) / cpu.machine_total:.0%} of it here"))
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {ratio}")
    if any(run.answered != run.sent for run in runs.values()):
        raise SystemExit("some queries were not answered")


if __name__ == "__main__":
    main()
