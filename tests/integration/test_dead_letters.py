"""Malformed messages land in the dead-letter topic with a reason; the agent keeps answering."""

import msgspec

from disrouter.actors.contracts import DeadLetter, Query
from tests.integration.conftest import make_trace, replay_agent, topology_args


async def test_each_malformed_kind_is_dead_lettered_and_agent_keeps_answering(
    deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path
):
    trace = make_trace(tmp_path / "t.jsonl", {"ok-1": {"solo": {}}, "ok-2": {"solo": {}}})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [replay_agent("solo", 0.5, trace)],
                                  limits={"max_prompt_chars": 100, "max_message_bytes": 4096, "max_hops": 4},
                                  max_hops=4))
    bad = {
        "not-json": b"{this is not json",
        "not-utf8": b"\xff\xfe\x00garbage",
        "wrong-type": b'{"prompt": 42}',
        "unknown-field": b'{"prompt": "hi", "colour": "red"}',
        "missing-prompt": b'{"id": "x"}',
        "empty-prompt": b'{"prompt": "   "}',
        "long-prompt": msgspec.json.encode({"prompt": "x" * 101}),
        "too-big": msgspec.json.encode({"prompt": "hi", "metadata": {"pad": "y" * 5000}}),
        "hops": b'{"prompt": "hi", "max_hops": 99}',
        "alpha": b'{"prompt": "hi", "alpha": 1.5}',
        "scenario": b'{"prompt": "hi", "scenario": "cheapest"}',
        "reply-to": b'{"prompt": "hi", "reply_to": "no spaces allowed"}',
    }
    async with client_factory(namespace) as client:
        await client.send(Query(id="ok-1", prompt="prompt of ok-1"))
        for key, value in bad.items():
            await client.send(value, key=key)
        await client.send(Query(id="ok-2", prompt="prompt of ok-2"))
        letters = await client.collect(f"{namespace}.dlq", len(bad), type_=DeadLetter)
        answers = await client.collect(f"{namespace}.answers", 2)

    by_key = {letter.key: letter for letter in letters}
    assert set(by_key) == set(bad), "one dead letter per malformed message, none for good ones"
    expected_reason = {
        "not-json": "not valid JSON", "not-utf8": "not valid JSON", "wrong-type": "Expected `str`",
        "unknown-field": "unknown field", "missing-prompt": "missing required field `prompt`",
        "empty-prompt": "`prompt` is empty", "long-prompt": "over the limit of 100",
        "too-big": "over the limit of 4096", "hops": "`max_hops` must be within [1, 4]",
        "alpha": "`alpha` must be within [0, 1]", "scenario": "Invalid enum value",
        "reply-to": "not a legal topic name",
    }
    for key, letter in by_key.items():
        assert expected_reason[key].lower() in letter.reason.lower(), (key, letter.reason)
        assert letter.agent == "solo" and letter.topic == f"{namespace}.ingress"
    # Nothing is lost: the raw bytes travel verbatim (base64 when not UTF-8).
    assert by_key["not-utf8"].value_encoding == "base64"
    assert by_key["not-json"].value == "{this is not json"
    assert sorted(a.id for a in answers) == ["ok-1", "ok-2"]
    assert all(a.status == "answered" and a.agent == "solo" for a in answers)
