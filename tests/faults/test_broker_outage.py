"""Broker outage under load: the broker is stopped with queries flowing through a 3-agent chain
and started again on the same port. Tansu here keeps topics in memory, so the restart comes
back empty: topics are recreated (as `disrouter topics create` would), then new queries are
sent. The agents reconnect and answer them with no manual action; the test prints the time to
recover and what the outage lost (README: "Delivery and liveness", durability)."""

from __future__ import annotations

import asyncio
import time

from disrouter.actors import topics
from disrouter.actors.config import KafkaSpec
from disrouter.actors.contracts import DeadLetter, Query
from disrouter.actors.kafka import ensure_topics
from disrouter.client.sdk import Client as SdkClient
from disrouter.stack.supervisor import Broker
from tests.faults.conftest import CHAIN, blast, chain_args, chain_trace, queries, replicas
from tests.integration.conftest import AnswerTap, Client

BEFORE, AFTER = 1000, 500
LATENCY_MS = 100  # per agent: ~320 queries/s each with 32 slots, so the stop finds work in flight


async def test_agents_recover_from_a_broker_restart_without_manual_action(deploy_topology, namespace, tmp_path):
    broker = Broker(log_path=tmp_path / "tansu.log").start()
    try:
        old = [f"o{i}" for i in range(BEFORE)]
        new = [f"n{i}" for i in range(AFTER)]
        trace = chain_trace(tmp_path / "t.jsonl", old + new, latency_ms=LATENCY_MS)
        per_agent = {name: {"max_in_flight": 32} for name, _ in CHAIN}
        deploy_topology(chain_args(namespace, broker.bootstrap, trace, engine={"simulate_latency": True}, per_agent=per_agent,
                                   timeouts={"process_s": 10, "publish_s": 5, "stall_s": 60}))
        pids = {agent: set(await replicas(namespace, agent)) for agent, _ in CHAIN}
        spec = KafkaSpec(bootstrap_servers=broker.bootstrap, partitions=4)

        # A client that lives through the outage, as a user's would: it sends the new queries.
        async with SdkClient(broker.bootstrap, namespace) as client:
            async with AnswerTap(broker.bootstrap, f"{namespace}.answers") as tap:
                await blast(broker.bootstrap, f"{namespace}.ingress", queries(old))
                await tap.until(BEFORE // 4, timeout_s=120)
                answered_before = set(tap.ids)
            broker.stop()  # memory storage: every topic, offset and group is gone
            stopped = time.perf_counter()
            await asyncio.sleep(3)
            broker.start()  # the same port: the agents' bootstrap address still holds
            restarted = time.perf_counter()
            await ensure_topics(spec, topics.all_topics(namespace, [name for name, _ in CHAIN]))
            # A new reader for what is published after the restart (the topics start at 0 again).
            async with AnswerTap(broker.bootstrap, f"{namespace}.answers") as tap:
                first_new: list[float] = []

                async def ask(qid: str) -> None:
                    await client.ask(Query(id=qid, prompt=f"prompt of {qid}"), timeout_s=240)
                    first_new.append(time.perf_counter() - restarted)

                await asyncio.gather(*(ask(qid) for qid in new))
                recovered = time.perf_counter() - restarted
                await asyncio.sleep(2)  # old work republished after the restart, and copies
                answered_after = set(tap.ids)
            rewinds = client.rewinds
        async with Client(broker.bootstrap, namespace) as reader:
            letters = await reader.collect(f"{namespace}.dlq", 10_000, type_=DeadLetter, timeout_s=3)
        after = {agent: set(await replicas(namespace, agent)) for agent, _ in CHAIN}
        answered = answered_before | answered_after

        lost = set(old) - answered
        print(f"\n[broker outage] before: {BEFORE} sent, {len(answered_before)} answered when the broker stopped; "
              f"down {restarted - stopped:.1f} s; after the restart: first new answer {min(first_new):.1f} s, "
              f"all {AFTER} new answered {recovered:.1f} s (the client rewound {rewinds} partitions); old queries "
              f"answered after the restart {len((answered_after & set(old)) - answered_before)}, lost {len(lost)} "
              f"(they were in the broker's memory); dead letters after the restart {len(letters)}; "
              f"replicas replaced {sum(pids[a] != after[a] for a in pids)}")
        assert set(new) <= answered_after, "every query sent after the restart is answered"
    finally:
        broker.stop()
