"""One bad message must not jam an agent: deployed agents (real broker, real Ray Serve) with an
answer too large to publish, a dead letter too large to publish, a query that grows to the
size limit down a chain, and an engine that hangs. Each ends with a recorded reason, the client
hears back, the agent keeps answering and its partitions commit to their end. And a replica
whose slots are all busy stays in its group, while one whose work cannot finish fails its
health check, so Serve replaces it."""

from __future__ import annotations

import asyncio
import os

import msgspec
from aiokafka import TopicPartition
from ray import serve

from disrouter.actors.config import KafkaSpec
from disrouter.actors.contracts import DeadLetter, Query
from disrouter.actors.kafka import make_consumer
from disrouter.stack.supervisor import Broker
from tests.integration.conftest import Client, make_trace, replay_agent, topology_args

LIMITS = {"max_prompt_chars": 4000, "max_message_bytes": 4096, "max_hops": 4}


async def committed_to_the_end(bootstrap: str, group: str, topic: str, partitions: int, timeout_s: float = 60.0) -> bool:
    """Wait until the group has committed every partition of `topic` up to its end offset."""
    probe = make_consumer(KafkaSpec(bootstrap_servers=bootstrap), group_id=group)
    await probe.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await probe.end_offsets(tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            committed = [await probe.committed(tp) or 0 for tp in tps]  # None: nothing to commit yet
            if committed == [ends[tp] for tp in tps]:
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await probe.stop()


async def test_an_answer_too_large_to_publish_is_dead_lettered_and_the_client_told(
    deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path
):
    huge = "x" * 400_000  # over the producer's request limit for these limits (~150 kB)
    trace = make_trace(tmp_path / "t.jsonl", {"huge": {"solo": {"answer": huge}}, "after": {"solo": {}}})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [replay_agent("solo", 0.5, trace)], limits=LIMITS, max_hops=4))
    async with client_factory(namespace) as client:
        await client.send(Query(id="huge", prompt="prompt of huge"))
        await client.send(Query(id="after", prompt="prompt of after"))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", 2)}
        (letter,) = await client.collect(f"{namespace}.dlq", 1, type_=DeadLetter)

    assert answers["after"].status == "answered", "the agent kept answering"
    told = answers["huge"]
    assert told.status == "unanswered" and "MessageSizeTooLargeError" in told.reason
    assert told.reason.startswith(f"could not publish to {namespace}.answers")
    assert (letter.key, letter.error_type, letter.destination) == ("huge", "publish", f"{namespace}.answers")
    # The letter holds the answer that could not go out, cut to fit, with its real size.
    assert letter.value_truncated and letter.value_bytes > 400_000 and letter.value.startswith('{"id":"huge"')
    assert await committed_to_the_end(kafka_bootstrap, f"{namespace}.agent.solo", f"{namespace}.ingress", 2)


async def test_a_dead_letter_too_large_to_publish_is_cut_to_fit(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    trace = make_trace(tmp_path / "t.jsonl", {"after": {"solo": {}}})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [replay_agent("solo", 0.5, trace)], limits=LIMITS, max_hops=4))
    garbage = os.urandom(300_000)  # not UTF-8: base64 makes the letter a third larger still
    async with client_factory(namespace) as client:
        await client.send(garbage, key="garbage")
        await client.send(Query(id="after", prompt="prompt of after"))
        (letter,) = await client.collect(f"{namespace}.dlq", 1, type_=DeadLetter)
        (answer,) = await client.collect(f"{namespace}.answers", 1)
    assert letter.key == "garbage" and letter.error_type == "limit" and "300000 bytes" in letter.reason
    assert letter.value_truncated and letter.value_bytes == 300_000 and letter.value_encoding == "base64"
    assert answer.id == "after" and answer.status == "answered"
    assert await committed_to_the_end(kafka_bootstrap, f"{namespace}.agent.solo", f"{namespace}.ingress", 2)


async def test_a_query_at_the_size_limit_is_answered_at_the_end_of_the_chain(
    deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path
):
    # a and b reject, c answers: the query gains a hop at each agent on its way.
    trace = make_trace(tmp_path / "t.jsonl", {"big": {"a": {"decision": "reject"}, "b": {"decision": "reject"}, "c": {}}})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [
        replay_agent("a", 0.1, trace, ["b"]), replay_agent("b", 0.4, trace, ["c"]), replay_agent("c", 0.9, trace)],
        limits=LIMITS, max_hops=4))
    query = Query(id="big", prompt="prompt of big", metadata={"pad": ""})
    query.metadata["pad"] = "p" * (LIMITS["max_message_bytes"] - len(msgspec.json.encode(query)) - 8)
    assert LIMITS["max_message_bytes"] - 16 < len(msgspec.json.encode(query)) <= LIMITS["max_message_bytes"]
    async with client_factory(namespace) as client:
        await client.send(query)
        (answer,) = await client.collect(f"{namespace}.answers", 1)
    assert (answer.status, answer.agent) == ("answered", "c")
    assert [h.agent for h in answer.trail] == ["a", "b", "c"]


async def test_an_engine_that_hangs_ends_the_query_unanswered_and_frees_the_slot(
    deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path
):
    trace = make_trace(tmp_path / "t.jsonl", {"hang": {"solo": {"latency_ms": 3_600_000}}, "after": {"solo": {}}})
    solo = replay_agent("solo", 0.5, trace, max_in_flight=1)
    solo["engine"]["simulate_latency"] = True
    deploy_topology(topology_args(namespace, kafka_bootstrap, [solo], partitions=1,
                                  timeouts={"process_s": 2, "publish_s": 5, "stall_s": 30}))
    async with client_factory(namespace) as client:
        await client.send(Query(id="hang", prompt="prompt of hang"))
        await client.send(Query(id="after", prompt="prompt of after"))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", 2)}
    hung = answers["hang"]
    assert hung.status == "unanswered" and "timed out after 2 s at 'solo'" in hung.reason
    assert [(h.agent, h.decision) for h in hung.trail] == [("solo", "reject")] and hung.trail[0].error
    # One slot, one partition: "after" could only be answered once "hang" let go of both.
    assert answers["after"].status == "answered"


async def test_a_reply_to_a_new_topic_does_not_cost_other_answers_their_delivery(
    deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path
):
    # Tansu auto-creates a topic on its first produce, and the request that carries it fails
    # the other topics' batches in it over and over (NotLeaderForPartition) until it times
    # out; a fresh send goes through. So one publish attempt may not spend the whole budget.
    ids = [f"n{i}" for i in range(6)]
    trace = make_trace(tmp_path / "t.jsonl", {qid: {"solo": {}} for qid in ids})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [replay_agent("solo", 0.5, trace)], partitions=1,
                                  timeouts={"process_s": 5, "publish_s": 6, "stall_s": 60}))
    async with client_factory(namespace) as client:
        await client.send(Query(id="warm-up", prompt="prompt of n0"))  # the agent is up and has published
        await client.collect(f"{namespace}.answers", 1)
        for i, qid in enumerate(ids):
            reply = {"reply_to": f"{namespace}.replies.{qid}"} if i % 2 else {}
            await client.send(Query(id=qid, prompt=f"prompt of {qid}", **reply))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", 4)}
        replies = [a for i, qid in enumerate(ids) if i % 2 for a in await client.collect(f"{namespace}.replies.{qid}", 1)]
    assert all(a.status == "answered" for a in [*answers.values(), *replies]), [a.reason for a in answers.values() if a.reason]
    assert sorted(answers) == ["n0", "n2", "n4", "warm-up"] and sorted(a.id for a in replies) == ["n1", "n3", "n5"]


async def test_a_replica_with_every_slot_busy_keeps_polling_and_stays_in_its_group(
    deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path
):
    # One slot, held for 8 s by "slow", while a consumer that has not polled for 3 s leaves its
    # group (max_poll_interval_ms). Leaving would revoke and re-assign the partition: the
    # replica counts both, so a second assignment shows it.
    trace = make_trace(tmp_path / "t.jsonl", {"slow": {"solo": {"latency_ms": 8000}}, "after": {"solo": {}}})
    solo = replay_agent("solo", 0.5, trace, max_in_flight=1)
    solo["engine"]["simulate_latency"] = True
    args = topology_args(namespace, kafka_bootstrap, [solo], partitions=1,
                         timeouts={"process_s": 60, "publish_s": 5, "stall_s": 120})
    args["kafka"]["max_poll_interval_ms"] = 3000
    deploy_topology(args)
    handle = serve.get_deployment_handle("solo", app_name=namespace)
    async with client_factory(namespace) as client:
        await client.send(Query(id="slow", prompt="prompt of slow"))
        await client.send(Query(id="after", prompt="prompt of after"))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", 2, timeout_s=120)}
    stats = await handle.stats.remote()
    print(f"\n[full replica] assignments={stats.get('assignments')} revocations={stats.get('revocations', 0)}")
    assert sorted(answers) == ["after", "slow"] and {a.status for a in answers.values()} == {"answered"}
    assert stats["consumed"] == 2 and stats.get("revocations", 0) == 0 and stats["assignments"] == 1, stats


async def test_a_replica_whose_work_cannot_finish_fails_its_health_check(deploy_topology, namespace, tmp_path):
    # Its own broker, stopped under the agent with work in flight: the outcomes can be neither
    # published nor dead-lettered, so their offsets stay unfinished. The consume loop itself
    # stays alive; health must fail anyway once that has lasted timeouts.stall_s.
    broker = Broker(log_path=tmp_path / "tansu.log").start()
    try:
        ids = ["h0", "h1"]
        trace = make_trace(tmp_path / "t.jsonl", {qid: {"solo": {"latency_ms": 2000}} for qid in ids})
        solo = replay_agent("solo", 0.5, trace)
        solo["engine"]["simulate_latency"] = True
        deploy_topology(topology_args(namespace, broker.bootstrap, [solo], partitions=1,
                                      timeouts={"process_s": 3, "publish_s": 1, "stall_s": 5}))
        handle = serve.get_deployment_handle("solo", app_name=namespace)
        async with Client(broker.bootstrap, namespace) as client:
            for qid in ids:
                await client.send(Query(id=qid, prompt=f"prompt of {qid}"))
        deadline = asyncio.get_running_loop().time() + 60
        while (await handle.stats.remote())["in_flight"] < len(ids):
            assert asyncio.get_running_loop().time() < deadline, "the queries never reached the agent"
            await asyncio.sleep(0.1)
        assert serve.status().applications[namespace].deployments["solo"].status == "HEALTHY"
        broker.stop()

        stalled = None
        while stalled is None:
            assert asyncio.get_running_loop().time() < deadline + 60, "the replica never reported a stall"
            stats = await handle.stats.remote()
            stalled = stats["stalled"]
            await asyncio.sleep(0.2)
        assert "without its fate recorded" in stalled and "timeouts.stall_s=5" in stalled
        # Serve's check_health sees it: after its consecutive failures the deployment is unhealthy.
        status = None
        while status is None or status.status != "UNHEALTHY":
            assert asyncio.get_running_loop().time() < deadline + 180, f"Serve never saw the failed health check: {status}"
            status = serve.status().applications[namespace].deployments["solo"]
            await asyncio.sleep(0.5)
        print(f"\n[stall] {stalled}; Serve: {status.status}: {status.message}")
        assert "health check failed" in status.message
    finally:
        broker.stop()
