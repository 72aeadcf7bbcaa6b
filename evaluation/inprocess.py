"""In-process mode: a topology's agents run in this process, one engine at a time — no broker,
no Ray — with the same questions, phases, traces and report as live mode (live.py).

It is for checking an adapter or a topology before deploying it: each hop is decided by the
same `Agent.process` a replica runs, on the same engine built from the same `engine:` block, so
the decisions and answers are the deployed ones (greedy decoding; vLLM's batching aside). What
it leaves out is the fabric: Kafka, signing, redelivery, rebalances, latency under load — a
routing claim still needs `--live` (README, "Measure what users see").

Why one engine at a time: on a small machine two vLLM engines share the cores, so each runs at
half speed; alone, each has them all. The agents are visited in the order queries flow
(entry first, then each agent after every agent that can hand it a query); every query waiting
for an agent — the deployed run's hand-offs at every α, and with `--forced-alone` each agent's
own forced copies — is answered or handed on while its engine is up, then the engine stops. A
topology in which queries can come back (a peer mesh) has no such order and is refused.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from disrouter.actors.agent import Agent, Forward
from disrouter.actors.contracts import Answer, Query
from disrouter.actors.engine import build_engine
from disrouter.actors.trace import TraceRecord
from disrouter.evaluation.evalset import Chain, EvalInputError
from disrouter.evaluation.live import (
    LiveRun,
    PhaseStats,
    deployed_items,
    deployed_query,
    forced_key,
    forced_query,
    save_run,
    write_deployed,
    write_forced,
)
from disrouter.topology.compile import agent_configs
from disrouter.topology.schema import Topology
from disrouter.training.data import Item

T = TypeVar("T")


class Stopped(Exception):
    """The run was stopped by SIGTERM; the engines it had started are closed."""


async def stop_on_sigterm(run: Awaitable[T]) -> T:
    """Await `run`, turning a SIGTERM into its cancellation, as Ctrl-C is: a killed process would
    skip the engines' `close`, and vLLM's engine process outlives its parent."""

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        return await run
    except asyncio.CancelledError:
        if terminated:
            raise Stopped("stopped by SIGTERM; the engines were closed") from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


# Where a query's final answer is filed: (α, item id) for the deployed phase at α, (None,
# `forced_key`) for a forced copy — the keys live mode's trace writers read.
Key = tuple[float | None, str]


def visiting_order(topology: Topology) -> list[str]:
    """Agents in the order queries reach them: the entry first, each after every agent that can
    hand it a query."""
    feeders: dict[str, set[str]] = {agent.name: set() for agent in topology.agents}
    for agent in topology.agents:
        for peer in agent.next:
            feeders[peer].add(agent.name)
    order: list[str] = []
    pending = [agent.name for agent in topology.agents]
    while pending:
        free = [name for name in pending if feeders[name] <= set(order)]
        # Queries start at the entry, so one that can be handed back to it loops as well.
        if not free or feeders[topology.entry_agent]:
            raise EvalInputError(
                "in-process mode runs each agent once, after every agent that can hand it a query; in this topology "
                f"queries can come back ({', '.join(sorted(pending))}: a peer mesh): deploy it and use --live alone"
            )
        name = topology.entry_agent if topology.entry_agent in free else free[0]
        order.append(name)
        pending.remove(name)
    return order


async def _visit(agent: Agent, jobs: list[tuple[Key, Query]], concurrency: int) -> tuple[dict[Key, Answer], list[tuple[str, Key, Query]], PhaseStats]:
    """One agent's queue: every query answered here, or handed on (returned with its peer)."""
    semaphore = asyncio.Semaphore(concurrency)
    finals: dict[Key, Answer] = {}
    handed: list[tuple[str, Key, Query]] = []
    stats = PhaseStats(f"agent {agent.config.name}", len(jobs))
    started = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"in-process {agent.config.name}", unit="q")

    async def one(key: Key, query: Query) -> None:
        async with semaphore:
            outcome = await agent.process(query)
        if isinstance(outcome, Forward):
            handed.append((outcome.peer.name, key, outcome.query))
            stats.forwarded += 1
        else:
            finals[key] = outcome.answer
            if outcome.answer.status == "answered":
                stats.answered += 1
            else:
                stats.unanswered += 1
        bar.update(1)

    try:
        await asyncio.gather(*(one(key, query) for key, query in jobs))
    finally:
        bar.close()
    stats.wall_s = round(time.perf_counter() - started, 3)
    return finals, handed, stats


async def collect_in_process(
    *,
    items: list[Item],
    topology: Topology,
    chain: Chain,
    alphas: list[float],
    out: Path,
    concurrency: int = 16,
    forced_alone: bool = False,
    run_id: str | None = None,
) -> LiveRun:
    """The live phases, run here; writes the same traces as `live.collect`."""
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    run_id = run_id or uuid.uuid4().hex[:8]
    order = visiting_order(topology)
    configs = agent_configs(topology)
    queues: dict[str, list[tuple[Key, Query]]] = {name: [] for name in order}
    asked = deployed_items(items, forced_alone)
    for alpha in alphas:
        queues[topology.entry_agent] += [((alpha, item.id), deployed_query(item, run_id, alpha)) for item in asked]
    if forced_alone:
        for agent in chain.agents:
            queues[agent] += [((None, forced_key(item.id, agent)), forced_query(item, run_id, agent, alphas[0])) for item in items]
    finals: dict[Key, Answer] = {}
    phases: list[PhaseStats] = []
    for name in order:
        jobs = queues.pop(name)
        if not jobs:
            continue
        engine = build_engine(configs[name].engine, agent=name)
        await engine.start()
        try:
            agent = Agent(configs[name], engine)
            agent.check_engine()
            answered, handed, stats = await _visit(agent, jobs, concurrency)
        finally:
            await engine.close()
        finals.update(answered)
        phases.append(stats)
        for peer, key, query in handed:
            queues[peer].append((key, query))  # a later agent: the order puts every peer after its feeders

    filed: dict[float | None, dict[str, Answer]] = {}
    for (phase, filed_as), answer in finals.items():
        filed.setdefault(phase, {})[filed_as] = answer
    traces: dict[str, str] = {}
    forced_rows: list[TraceRecord] | None = None
    if forced_alone:
        forced_rows = write_forced(out, items, chain, filed.get(None, {}), traces)
    for alpha in alphas:
        write_deployed(out, alpha, asked, chain, filed.get(alpha, {}), forced_rows, traces)
    return save_run(LiveRun(str(out), traces, phases))
