"""The consume loop on a real broker, without Ray: commits, redelivery, health, back-pressure."""

import asyncio
from collections import Counter

from aiokafka import TopicPartition

from disrouter.actors.config import Timeouts
from disrouter.actors.contracts import Query
from disrouter.actors.engine import build_engine
from disrouter.actors.kafka import make_consumer
from disrouter.actors.worker import AgentWorker
from disrouter.stack.supervisor import Broker
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology
from tests.integration.conftest import AnswerTap, Client, make_trace, replay_agent, topology_args


def _config(namespace, bootstrap, trace, **agent_extra):
    topology = parse_topology(topology_args(namespace, bootstrap, [replay_agent("solo", 0.5, trace, **agent_extra)]))
    return agent_configs(topology)["solo"]


async def _wait(predicate, timeout_s=30.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_offsets_committed_to_the_end_after_out_of_order_work(client_factory, kafka_bootstrap, namespace, tmp_path):
    # Latencies vary per query, so completions come back out of order within each partition.
    ids = [f"w{i}" for i in range(30)]
    trace = make_trace(tmp_path / "t.jsonl", {qid: {"solo": {"latency_ms": (i * 37) % 200}} for i, qid in enumerate(ids)})
    config = _config(namespace, kafka_bootstrap, trace)
    config.engine["simulate_latency"] = True
    worker = AgentWorker(config, build_engine(config.engine, agent="solo"))
    await worker.start()
    try:
        async with client_factory(namespace) as client:
            for qid in ids:
                await client.send(Query(id=qid, prompt="x"))
            answers = await client.collect(f"{namespace}.answers", len(ids))
        assert sorted(a.id for a in answers) == sorted(ids)
        await _wait(lambda: not worker.watermarks.committable())
    finally:
        await worker.stop()

    probe = make_consumer(config.kafka, group_id=config.group_id)
    await probe.start()
    try:
        tps = [TopicPartition(f"{namespace}.ingress", p) for p in range(config.kafka.partitions)]
        ends = await probe.end_offsets(tps)
        for tp in tps:
            assert await probe.committed(tp) == ends[tp], f"{tp} committed up to its end"
    finally:
        await probe.stop()


async def test_unfinished_queries_are_redelivered_after_a_stop(client_factory, kafka_bootstrap, namespace, tmp_path):
    ids = [f"s{i}" for i in range(12)]
    trace = make_trace(tmp_path / "t.jsonl", {qid: {"solo": {"latency_ms": 3000}} for qid in ids})
    config = _config(namespace, kafka_bootstrap, trace)
    config.drain_timeout_s = 0.1  # stop long before the 3 s "generations" finish
    slow = dict(config.engine, simulate_latency=True)
    first = AgentWorker(config, build_engine(slow, agent="solo"))
    await first.start()
    async with client_factory(namespace) as client:
        for qid in ids:
            await client.send(Query(id=qid, prompt="x"))
        await _wait(lambda: len(first._tasks) == len(ids))
        await first.stop()  # crash-like: in-flight work abandoned, nothing committed for it
        assert first.stats["answered"] == 0

        second = AgentWorker(config, build_engine(config.engine, agent="solo"))  # fast engine
        await second.start()
        try:
            answers = await client.collect(f"{namespace}.answers", len(ids))
        finally:
            await second.stop()
    assert sorted(a.id for a in answers) == sorted(ids), "no query lost across the restart"


async def test_back_pressure_caps_in_flight(client_factory, kafka_bootstrap, namespace, tmp_path):
    ids = [f"b{i}" for i in range(40)]
    trace = make_trace(tmp_path / "t.jsonl", {qid: {"solo": {"latency_ms": 300}} for qid in ids})
    config = _config(namespace, kafka_bootstrap, trace, max_in_flight=5)
    worker = AgentWorker(config, build_engine(dict(config.engine, simulate_latency=True), agent="solo"))
    await worker.start()
    peak = 0

    async def sample():
        nonlocal peak
        while True:
            peak = max(peak, len(worker._tasks))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        async with client_factory(namespace) as client:
            for qid in ids:
                await client.send(Query(id=qid, prompt="x"))
            answers = await client.collect(f"{namespace}.answers", len(ids))
    finally:
        sampler.cancel()
        await worker.stop()
    assert len(answers) == len(ids)
    assert peak == 5, f"in-flight peaked at {peak}, the limit is 5"


async def test_health_reports_a_dead_loop(kafka_bootstrap, namespace, tmp_path):
    trace = make_trace(tmp_path / "t.jsonl", {"x": {"solo": {}}})
    config = _config(namespace, kafka_bootstrap, trace)
    worker = AgentWorker(config, build_engine(config.engine, agent="solo"))
    await worker.start()
    assert worker.failure is None
    # Kill the loop from underneath (as a fatal client error would): health must notice.
    await worker._consumer.stop()
    await _wait(lambda: worker.failure is not None, timeout_s=10)
    # Serve stops a replica whose health check failed: stop() must still clean up everything.
    await worker.stop()
    assert worker._commit_task.done()


async def test_health_fails_when_work_stalls_while_the_broker_is_away(namespace, tmp_path):
    # Its own broker: this test stops it under the worker's feet.
    broker = Broker(log_path=tmp_path / "tansu.log").start()
    ids = [f"h{i}" for i in range(3)]
    trace = make_trace(tmp_path / "t.jsonl", {qid: {"solo": {"latency_ms": 1500}} for qid in ids})
    config = _config(namespace, broker.bootstrap, trace)
    config.timeouts = Timeouts(process_s=5, publish_s=1, stall_s=8)
    worker = AgentWorker(config, build_engine(dict(config.engine, simulate_latency=True), agent="solo"))
    try:
        await worker.start()
        async with Client(broker.bootstrap, namespace) as client:
            for qid in ids:
                await client.send(Query(id=qid, prompt="x"))
        await _wait(lambda: len(worker._tasks) == len(ids))
        broker.stop()  # the outcomes can now be neither published nor dead-lettered
        assert worker.failure is None, "in-flight work within its bounds is healthy"
        await _wait(lambda: worker.failure is not None, timeout_s=120)
        assert "stalled" in str(worker.failure) and "timeouts.stall_s=8" in str(worker.failure)
        assert worker.stats["answered"] == 0
    finally:
        broker.stop()
        await asyncio.wait_for(worker.stop(), 120)


async def test_work_of_a_partition_that_moves_is_fenced_and_redone_only_there(client_factory, kafka_bootstrap, namespace, tmp_path):
    """A second replica joins while the first has every query in flight: the first keeps one
    ingress partition (its work resumes) and loses the other (its work is cancelled and the
    newcomer redoes exactly that). Engine calls are counted from the replay engine's call log."""
    ids = [f"f{i}" for i in range(24)]
    calls = tmp_path / "calls.log"
    trace = make_trace(tmp_path / "t.jsonl", {qid: {"solo": {"latency_ms": 8000}} for qid in ids})
    config = _config(namespace, kafka_bootstrap, trace, max_in_flight=len(ids))
    config.timeouts = Timeouts(rebalance_grace_s=0)  # fence at once: this test is about the fence
    engine = dict(config.engine, simulate_latency=True, call_log=str(calls))
    first, second = (AgentWorker(config, build_engine(engine, agent="solo")) for _ in range(2))
    await first.start()
    try:
        async with AnswerTap(kafka_bootstrap, f"{namespace}.answers") as tap:
            async with client_factory(namespace) as client:
                for qid in ids:
                    await client.send(Query(id=qid, prompt="x"))
            await _wait(lambda: len(first._tasks) == len(ids))
            await second.start()  # joins the group: every partition is revoked, then split
            await tap.until(len(ids), timeout_s=120)
            await _wait(lambda: not first._tasks and not second._tasks)
            # Every answer either replica published, copies included, has been read back.
            published = first.stats["answered"] + second.stats["answered"]
            await _wait(lambda: len(tap.ids) >= published)
            answers = Counter(tap.ids)
    finally:
        await second.stop()
        await first.stop()
    starts = Counter(line.split()[2] for line in calls.read_text().splitlines() if line.startswith("start "))
    assert sorted(answers) == sorted(ids) and set(answers.values()) == {1}, "none lost, none answered twice"
    cancelled = first.stats["cancelled_on_revoke"] + second.stats["cancelled_on_revoke"]
    assert first.stats["resumed_after_rebalance"] > 0 and cancelled > 0, (first.stats, second.stats)
    # The kept partition was resumed past its work in flight, not read again from its commit.
    assert first.stats["skipped_reread"] == 0 and first.stats["consumed"] == len(ids)
    # Each query run twice is one that the fence cancelled on the replica that lost it.
    assert sum(n - 1 for n in starts.values()) == cancelled
    assert second.stats["consumed"] == cancelled
