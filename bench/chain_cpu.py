"""CPU per query of the fabric's chain in one process: where a query's CPU goes, without Ray.

    python -m disrouter.bench.chain_cpu --queries 6000 --concurrency 256 [--profile out.prof]

The three replay agents of `bench.fabric` (each an `AgentWorker`, as a replica runs it) and the
client share this process and its own Tansu broker. It prints the process's CPU per query
(user + system, from its own clock, so a busy machine slows the run but does not inflate the
figure), the broker's, and the garbage collector's share of it. `--profile` writes a cProfile
with a CPU-time timer (a wall-clock profile, like py-spy's samples of a process a saturated
machine keeps preempting, charges the waits to whatever line was running). `--gc default`
leaves CPython's collector as it is; `settled` (the default) settles it as a deployed replica's
is (`actors/heap.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from disrouter.actors import heap
from disrouter.actors.contracts import Query
from disrouter.actors.engine import build_engine
from disrouter.actors.logs import configure_logging
from disrouter.actors.worker import AgentWorker
from disrouter.bench.fabric import cpu_seconds, make_trace, topology_args
from disrouter.bench.load import closed_loop
from disrouter.client.sdk import Client
from disrouter.stack.supervisor import Broker
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology


class Collections:
    """CPU seconds the cyclic collector spent, counted through `gc.callbacks`."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.count += 1


async def run(broker: Broker, opts: argparse.Namespace) -> None:
    assert broker.proc is not None
    pids = {"broker": broker.proc.pid}
    trace = Path(tempfile.mkdtemp(prefix="dr-chain-cpu-", dir="/tmp")) / "trace.jsonl"
    make_trace(trace, opts.queries + 3)
    configs = agent_configs(parse_topology(topology_args("chain-cpu", broker.bootstrap, trace, opts.partitions, opts.max_in_flight)))
    workers = [AgentWorker(config, build_engine(config.engine, agent=name)) for name, config in configs.items()]
    for worker in workers:
        await worker.start()
    try:
        async with Client(broker.bootstrap, "chain-cpu") as client:
            for i in range(3):  # warm-up: every agent joined its group and published once
                await client.ask(Query(id=f"f{i}", prompt="p"), opts.timeout)
            if opts.gc == "settled":
                heap.settle()

            async def one(i: int) -> None:
                answer = await client.ask(Query(id=f"f{i}", prompt="p"), opts.timeout)
                if answer.status != "answered":
                    raise RuntimeError(f"{answer.id}: {answer.status} ({answer.reason})")

            collections = Collections()
            gc.callbacks.append(collections)
            profile = cProfile.Profile(time.process_time) if opts.profile else None
            cpu, broker_cpu, started = time.process_time(), cpu_seconds(pids)["broker"], time.perf_counter()
            if profile is not None:
                profile.enable()
            try:
                await closed_loop(range(3, 3 + opts.queries), opts.concurrency, one)
            finally:
                if profile is not None:
                    profile.disable()
                gc.callbacks.remove(collections)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            broker_cpu = cpu_seconds(pids)["broker"] - broker_cpu
    finally:
        for worker in workers:
            await worker.stop()
    n = opts.queries
    print(f"chain in one process (3 replay agents + client), gc={opts.gc}, queries={n} concurrency={opts.concurrency}: "
          f"{n / elapsed:,.0f} q/s; CPU per query: this process {cpu / n * 1e6:.0f} µs "
          f"(of which the collector {collections.seconds / n * 1e6:.0f} µs in {collections.count} collections), "
          f"broker {broker_cpu / n * 1e6:.0f} µs")
    if profile is not None:
        profile.dump_stats(opts.profile)
        print(f"cProfile (CPU time) written to {opts.profile}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-in-flight", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--gc", choices=("settled", "default"), default="settled")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile (CPU-time timer) of the measured run")
    opts = parser.parse_args()
    os.environ.setdefault("DISROUTER_LOG_LEVEL", "WARNING")
    os.environ.setdefault("DISROUTER_TRUST_KEY", secrets.token_hex(32))  # the agents sign their hand-offs
    configure_logging()
    broker = Broker().start()
    try:
        asyncio.run(run(broker, opts))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
