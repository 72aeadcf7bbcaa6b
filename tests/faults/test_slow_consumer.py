"""A slow consumer: the middle agent of a chain is far slower than its input (the producer sends
everything at once, the entry agent forwards at full speed). Its in-flight cap holds — the
backlog waits on the broker, not in the replica — and its resident memory is sampled over the
run and printed (peak and growth against the backlog it was handed)."""

from __future__ import annotations

import asyncio
import time

import msgspec
from ray import serve

from disrouter.actors.contracts import Query
from tests.faults.conftest import blast, chain_args, chain_trace, replicas, rss_mb
from tests.integration.conftest import AnswerTap

QUERIES = 900
PAD = 64_000  # bytes of metadata per query: the backlog dwarfs what the cap admits (8 × 64 kB)
CAP = 8
LATENCY_MS = 100  # at medium only: 8 slots → ~80 queries/s, against ~600 arriving at once


async def test_a_slow_agent_keeps_its_in_flight_cap_and_bounded_memory(deploy_topology, kafka_bootstrap, namespace, tmp_path):
    ids = [f"m{i}" for i in range(QUERIES)]
    trace = chain_trace(tmp_path / "t.jsonl", ids, latency_ms=LATENCY_MS)
    args = chain_args(namespace, kafka_bootstrap, trace, per_agent={"medium": {"max_in_flight": CAP}})
    args["agents"][1]["engine"]["simulate_latency"] = True  # only medium is slow
    deploy_topology(args)
    (pid,) = await replicas(namespace, "medium")
    handle = serve.get_deployment_handle("medium", app_name=namespace)
    encoder = msgspec.json.Encoder()
    records = [(qid, encoder.encode(Query(id=qid, prompt=f"prompt of {qid}", metadata={"pad": "p" * PAD}))) for qid in ids]
    backlog_mb = sum(len(v) for i, (_, v) in enumerate(records) if i % 3) / 2**20  # what small passes to medium

    samples: list[tuple[float, float, int, int]] = []  # (s, RSS MB, in flight, consumed)
    baseline_rss = rss_mb(pid)
    async with AnswerTap(kafka_bootstrap, f"{namespace}.answers") as tap:
        started = time.perf_counter()
        # Sampled from the first byte sent: sending 58 MB takes seconds on a busy machine.
        sending = asyncio.create_task(blast(kafka_bootstrap, f"{namespace}.ingress", records))
        deadline = started + 300
        while len(set(tap.ids)) < QUERIES or not sending.done():
            assert time.perf_counter() < deadline, f"{len(set(tap.ids))} of {QUERIES} answered"
            error = sending.exception() if sending.done() else None
            if error is not None:
                raise error
            stats = await handle.stats.remote()
            samples.append((time.perf_counter() - started, rss_mb(pid), stats["in_flight"],
                            stats.get("consumed", 0)))
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
        await sending

    first_rss, peak_rss = baseline_rss, max(s[1] for s in samples)
    peak_in_flight = max(s[2] for s in samples)
    timeline = " ".join(f"{t:.0f}s:{rss:.0f}MB/{n}" for t, rss, n, _ in samples[:: max(1, len(samples) // 12)])
    print(f"\n[slow consumer] queries={QUERIES} (×{PAD // 1000} kB) backlog handed to medium={backlog_mb:.1f} MB "
          f"cap={CAP} peak in flight={peak_in_flight} RSS before={first_rss:.0f} MB peak={peak_rss:.0f} MB "
          f"(+{peak_rss - first_rss:.1f} MB) all answered in {elapsed:.1f} s\n[slow consumer] RSS/in-flight over time: {timeline}")
    assert set(tap.ids) == set(ids)
    assert peak_in_flight <= CAP, "the in-flight cap holds"
    assert any(n == CAP for _, _, n, _ in samples), "the agent was saturated (the test exercised the cap)"
