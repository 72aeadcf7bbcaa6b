"""Poison input under load: bad messages of every kind mixed 1 : 100 into 5,000 queries on a
3-agent chain. Each one reaches the dead-letter topic with its reason, every valid query is
answered (exactly one answer per id after de-duplication), and no replica crashes.

(tests/integration/test_dead_letters.py and test_trust_boundary.py check each kind alone.)
"""

from __future__ import annotations

import time

import msgspec

from disrouter.actors.contracts import DeadLetter, Query
from tests.faults.conftest import blast, chain_args, chain_trace, queries, replicas
from tests.integration.conftest import AnswerTap, Client

VALID = 5000
LIMITS = {"max_prompt_chars": 1000, "max_message_bytes": 4096, "max_hops": 4}


def poison(namespace: str) -> dict[str, tuple[str, bytes | None, str]]:
    """kind → (topic, value, what its dead letter's reason says)."""
    ingress, medium = f"{namespace}.ingress", f"{namespace}.agent.medium"
    enc = msgspec.json.encode
    return {
        "not-json": (ingress, b"{this is not json", "not valid JSON"),
        "invalid-utf8": (ingress, b"\xff\xfe\x00garbage", "not valid JSON"),
        "wrong-shape": (ingress, b'["prompt", "hi"]', "Expected `object`, got `array`"),
        "missing-prompt": (ingress, b'{"id": "x"}', "missing required field `prompt`"),
        "wrong-types": (ingress, b'{"prompt": 42}', "Expected `str`, got `int`"),
        "empty-prompt": (ingress, b'{"prompt": "  "}', "`prompt` is empty"),
        "unknown-field": (ingress, b'{"prompt": "hi", "route": "large"}', "unknown field `route`"),
        "oversized": (ingress, enc({"prompt": "hi", "metadata": {"pad": "y" * 5000}}), "over the limit of 4096"),
        "long-prompt": (ingress, enc({"prompt": "x" * 1001}), "over the limit of 1000"),
        "unknown-scenario": (ingress, b'{"prompt": "hi", "scenario": "cheapest"}', "Invalid enum value 'cheapest'"),
        "alpha-above-1": (ingress, b'{"prompt": "hi", "alpha": 1.5}', "`alpha` must be within [0, 1]"),
        "alpha-below-0": (ingress, b'{"prompt": "hi", "alpha": -0.1}', "`alpha` must be within [0, 1]"),
        "max-hops-0": (ingress, b'{"prompt": "hi", "max_hops": 0}', "`max_hops` must be within [1, 4]"),
        "max-hops-99": (ingress, b'{"prompt": "hi", "max_hops": 99}', "`max_hops` must be within [1, 4]"),
        "client-trail": (ingress, enc({"prompt": "hi", "trail": [{"agent": "small", "decision": "reject"}]}),
                         "`trail` is written by agents only"),
        "client-force-answer": (ingress, b'{"prompt": "hi", "force_answer": true}', "`force_answer` is written by agents only"),
        "reply-to-outside": (ingress, b'{"prompt": "hi", "reply_to": "victim.answers"}', "is not allowed"),
        "reply-to-internal": (ingress, enc({"prompt": "hi", "reply_to": medium}), "is an internal topic"),
        "tombstone": (ingress, None, "no value (tombstone)"),
        "unsigned-hand-off": (medium, enc(Query(id="skip", prompt="prompt of v0")), "unsigned"),
    }


async def test_poison_mixed_into_load_is_dead_lettered_and_every_valid_query_answered(
    deploy_topology, kafka_bootstrap, namespace, tmp_path
):
    ids = [f"v{i}" for i in range(VALID)]
    trace = chain_trace(tmp_path / "t.jsonl", ids)
    deploy_topology(chain_args(namespace, kafka_bootstrap, trace, limits=LIMITS, max_hops=4))
    kinds = poison(namespace)
    before = {agent: set(await replicas(namespace, agent)) for agent in ("small", "medium", "large")}

    # One bad message after every 100 good ones, the kinds in turn: 50 in all, each kind ≥ 2 times.
    names = list(kinds)
    by_topic: dict[str, list[tuple[str | None, bytes | None]]] = {}
    expected: dict[str, str] = {}
    valid = queries(ids)
    for i in range(VALID // 100):
        for record in valid[i * 100:(i + 1) * 100]:
            by_topic.setdefault(f"{namespace}.ingress", []).append(record)
        kind = names[i % len(names)]
        topic, value, reason = kinds[kind]
        key = f"poison-{kind}-{i}"
        by_topic.setdefault(topic, []).append((key, value))
        expected[key] = reason
    async with AnswerTap(kafka_bootstrap, f"{namespace}.answers") as tap:
        started = time.perf_counter()
        for topic, records in by_topic.items():
            await blast(kafka_bootstrap, topic, records)
        await tap.until(VALID, timeout_s=300)
        elapsed = time.perf_counter() - started
        await tap.caught_up()
        answers = list(tap.ids)

    async with Client(kafka_bootstrap, namespace) as reader:
        letters: list[DeadLetter] = await reader.collect(f"{namespace}.dlq", len(expected), type_=DeadLetter, timeout_s=120)
    after = {agent: await replicas(namespace, agent) for agent in ("small", "medium", "large")}

    by_key = {letter.key: letter for letter in letters}
    duplicates = len(answers) - len(set(answers))
    print(f"\n[poison under load] valid={VALID} poison={len(expected)} ({len(kinds)} kinds) answered={len(set(answers))} "
          f"duplicate answers={duplicates} dead letters={len(letters)} in {elapsed:.1f} s "
          f"({VALID / elapsed:,.0f} valid queries/s, shared 2-core machine)")
    assert set(answers) == set(ids), f"unanswered: {sorted(set(ids) - set(answers))[:10]}"
    assert set(by_key) == set(expected), f"missing letters: {sorted(set(expected) - set(by_key))}"
    for key, reason in expected.items():
        assert reason.lower() in by_key[key].reason.lower(), (key, by_key[key].reason)
    assert by_key[next(k for k in expected if k.startswith("poison-invalid-utf8"))].value_encoding == "base64"
    # Zero crashes: the same replica of every agent before and after, healthy, letters counted.
    assert {agent: set(stats) for agent, stats in after.items()} == before
    assert all(s["healthy"] for stats in after.values() for s in stats.values())
    assert sum(s.get("dead_lettered", 0) for stats in after.values() for s in stats.values()) == len(expected)
