"""The consume loop on a real broker, without Ray: commits, redelivery, health, back-pressure."""

import asyncio

from aiokafka import TopicPartition

from disrouter.actors.contracts import Query
from disrouter.actors.engine import build_engine
from disrouter.actors.kafka import make_consumer
from disrouter.actors.worker import AgentWorker
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology
from tests.integration.conftest import make_trace, replay_agent, topology_args


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
