"""Clients may not steer routing: on a deployed chain (real broker, real Ray Serve), every way a
plain producer could skip agents, force answers, forge a trail or aim answers elsewhere is
dead-lettered with its reason, while ordinary queries and a trusted tool's signed ones work."""

from __future__ import annotations

import secrets

import msgspec

from disrouter.actors.config import TrustSpec
from disrouter.actors.contracts import DeadLetter, Query
from disrouter.actors.trust import TrustKeys
from disrouter.client.sdk import Client as TrustedClient
from tests.integration.conftest import make_trace, replay_agent, topology_args


async def test_a_client_cannot_steer_routing_but_a_trusted_tool_can(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    ids = ["ok", "private", "trusted", "force", "trail", "skip", "forged", "moved", "cross-ns", "internal"]
    # Both agents would answer every query: whoever answers shows which path a query took.
    trace = make_trace(tmp_path / "t.jsonl", {qid: {"small": {}, "large": {}} for qid in ids})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [
        replay_agent("small", 0.1, trace, ["large"]), replay_agent("large", 0.9, trace)]))
    ingress, small, large = f"{namespace}.ingress", f"{namespace}.agent.small", f"{namespace}.agent.large"
    enc = msgspec.json.Encoder()

    def q(qid: str, **extra) -> bytes:
        return enc.encode(Query(id=qid, prompt=f"prompt of {qid}", **extra))

    stranger = TrustKeys([secrets.token_hex(32).encode()])
    agents_key = TrustKeys.load(TrustSpec())  # the default spec: $DISROUTER_TRUST_KEY, as the replicas read it
    steering = {
        "force": (ingress, q("force", force_answer=True), None),
        "trail": (ingress, enc.encode({"id": "trail", "prompt": "prompt of trail",
                                        "trail": [{"agent": "small", "decision": "reject", "cost": 0.0}]}), None),
        "skip": (large, q("skip"), None),  # straight to the expensive agent, unsigned
        "forged": (large, q("forged", force_answer=True), stranger.sign(large, b"forged", q("forged", force_answer=True))),
        # Signed by the agents' key, but for small's topic: replayed into large's.
        "moved": (large, q("moved"), agents_key.sign(small, b"moved", q("moved"))),
        "cross-ns": (ingress, q("cross-ns", reply_to="victim.answers"), None),
        "internal": (ingress, q("internal", reply_to=small), None),
    }
    async with client_factory(namespace) as client:
        await client.send(Query(id="ok", prompt="prompt of ok"))
        await client.send(Query(id="private", prompt="prompt of private", reply_to=f"{namespace}.replies.ana"))
        for qid, (topic, value, headers) in steering.items():
            await client.producer.send_and_wait(topic, value, key=qid.encode(), headers=headers)
        letters = await client.collect(f"{namespace}.dlq", len(steering), type_=DeadLetter)
        answers = await client.collect(f"{namespace}.answers", 1)
        private = await client.collect(f"{namespace}.replies.ana", 1)

    # The trusted tool (what `disrouter eval --live --forced-alone` uses) holds the key.
    async with TrustedClient(kafka_bootstrap, namespace) as tool:
        forced = await tool.ask(Query(id="trusted", prompt="prompt of trusted", force_answer=True), 60, topic=large)

    by_key = {letter.key: letter for letter in letters}
    assert set(by_key) == set(steering), "each steering attempt dead-lettered, nothing else"
    expected = {
        "force": "`force_answer` is written by agents only", "trail": "`trail` is written by agents only",
        "skip": "unsigned", "forged": "does not match", "moved": "does not match",
        "cross-ns": "is not allowed", "internal": "is an internal topic",
    }
    for qid, needle in expected.items():
        assert needle in by_key[qid].reason, (qid, by_key[qid].reason)
    assert by_key["skip"].topic == large and by_key["skip"].error_type == "untrusted"
    assert [(a.id, a.agent) for a in answers] == [("ok", "small")], answers
    assert [(a.id, a.agent) for a in private] == [("private", "small")]
    assert (forced.status, forced.agent) == ("answered", "large")
