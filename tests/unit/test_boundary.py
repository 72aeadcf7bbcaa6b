"""The trust boundary: what a client may set on ingress, what only signed hand-offs carry."""

from __future__ import annotations

import json
import secrets

import pytest

from disrouter.actors.boundary import Boundary, reply_to_problem, signed_query
from disrouter.actors.config import AgentConfig, Limits, TrustSpec
from disrouter.actors.contracts import Hop, Query
from disrouter.actors.envelope import Envelope
from disrouter.actors.errors import MalformedMessage
from disrouter.actors.trust import MAC_HEADER, TrustKeyError, TrustKeys

KEY = secrets.token_hex(32)
LIMITS = Limits(max_message_bytes=2000, max_hops=4)


def config(**trust) -> AgentConfig:
    return AgentConfig(name="small", namespace="ns", cost=0.1, engine={}, input_topics=["ns.ingress", "ns.agent.small"],
                       answers_topic="ns.answers", dlq_topic="ns.dlq", limits=LIMITS, trust=TrustSpec(**trust))


def boundary(keys: TrustKeys | None = None, **trust) -> Boundary:
    return Boundary(config(**trust), keys or TrustKeys([KEY.encode()]), Envelope(LIMITS))


def js(**fields) -> bytes:
    return json.dumps(fields).encode()


def refused(b: Boundary, topic: str, value: bytes, key: bytes | None = b"q", headers=()) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as info:
        b.admit(topic, key, value, headers)
    return info.value


# --- ingress: what a client may set -------------------------------------------------------------


def test_a_client_query_with_every_client_field_is_admitted():
    value = js(prompt="hi", id="q", scenario="balance", alpha=0.3, reply_to="ns.replies.ana", max_hops=3,
               tags=["math"], metadata={"user": "ana"})
    q = boundary().admit("ns.ingress", b"q", value)
    assert (q.id, q.alpha, q.reply_to, q.tags, q.metadata) == ("q", 0.3, "ns.replies.ana", ["math"], {"user": "ana"})


@pytest.mark.parametrize(
    ("field", "value"),
    [("force_answer", True), ("trail", [{"agent": "small", "decision": "reject", "cost": 0.0}])],
)
def test_agent_only_fields_are_refused_on_ingress(field, value):
    err = refused(boundary(), "ns.ingress", js(prompt="hi", **{field: value}))
    assert err.kind == "forbidden"
    assert f"`{field}` is written by agents only" in err.reason


@pytest.mark.parametrize(
    ("reply_to", "why"),
    [
        ("other.answers", "not allowed"),  # another namespace's answers topic
        ("nsx.answers", "not allowed"),  # shares the letters, not the prefix `ns.`
        ("ns.ingress", "internal topic"),
        ("ns.dlq", "internal topic"),
        ("ns.stream", "internal topic"),  # chunks of answers being generated: agents write it
        ("ns.agent.large", "internal topic"),
    ],
)
def test_reply_to_outside_what_the_topology_allows_is_refused(reply_to, why):
    err = refused(boundary(), "ns.ingress", js(prompt="hi", reply_to=reply_to))
    assert err.kind == "forbidden" and why in err.reason and repr(reply_to) in err.reason


def test_reply_to_prefixes_from_the_topology():
    b = boundary(reply_to_prefixes=["shared.replies."])
    assert b.admit("ns.ingress", b"q", js(prompt="hi", reply_to="shared.replies.ana")).reply_to == "shared.replies.ana"
    assert "not allowed" in refused(b, "ns.ingress", js(prompt="hi", reply_to="ns.answers")).reason
    # Internal topics stay closed whatever the prefixes say.
    assert reply_to_problem("ns", ["ns."], "ns.agent.small") is not None
    assert reply_to_problem("ns", None, "ns.answers") is None


# --- agent topics: signed hand-offs only ------------------------------------------------------------


def handoff(**fields) -> Query:
    return Query(prompt="hi", id="q", **fields)


def test_a_signed_hand_off_with_trail_and_force_answer_is_admitted():
    keys = TrustKeys([KEY.encode()])
    query = handoff(force_answer=True, trail=[Hop(agent="small", decision="reject", cost=0.1)])
    key, value, headers = signed_query(keys, "ns.agent.small", query)
    assert boundary(keys).admit("ns.agent.small", key, value, headers) == query


def test_unsigned_forged_and_moved_hand_offs_are_refused():
    keys = TrustKeys([KEY.encode()])
    b = boundary(keys)
    key, value, headers = signed_query(keys, "ns.agent.small", handoff(force_answer=True))
    assert "unsigned" in refused(b, "ns.agent.small", value, key).reason
    forged = TrustKeys([secrets.token_hex(32).encode()]).sign("ns.agent.small", key, value)
    assert "does not match" in refused(b, "ns.agent.small", value, key, forged).reason
    # Signed for one agent's topic, replayed into another's.
    assert "does not match" in refused(b, "ns.agent.large", value, key, headers).reason
    # The value or the key altered after signing.
    assert "does not match" in refused(b, "ns.agent.small", value.replace(b"hi", b"ho"), key, headers).reason
    assert "does not match" in refused(b, "ns.agent.small", value, b"other", headers).reason
    assert "more than once" in refused(b, "ns.agent.small", value, key, headers * 2).reason
    assert refused(b, "ns.agent.small", value, key).kind == "untrusted"


def test_hand_offs_have_room_for_their_trail_beyond_the_ingress_limit():
    keys = TrustKeys([KEY.encode()])
    b = boundary(keys)
    padded = handoff(metadata={"pad": "x" * 1900}, trail=[Hop(agent="a" * 64, decision="reject", error="e" * 256)] * 3)
    key, value, headers = signed_query(keys, "ns.agent.small", padded)
    assert LIMITS.max_message_bytes < len(value) <= LIMITS.handoff_bytes
    assert b.admit("ns.agent.small", key, value, headers).metadata == padded.metadata
    # The same bytes on ingress are over the client's limit (and carry a trail besides).
    assert refused(b, "ns.ingress", value).kind == "limit"


def test_reply_to_is_checked_on_hand_offs_too():
    keys = TrustKeys([KEY.encode()])
    key, value, headers = signed_query(keys, "ns.agent.small", handoff(reply_to="other.answers"))
    assert refused(boundary(keys), "ns.agent.small", value, key, headers).kind == "forbidden"


# --- keys ---------------------------------------------------------------------------------------


def test_keys_load_from_the_file_first_then_the_environment(tmp_path):
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    assert TrustKeys.load(TrustSpec(key_file=str(path)), environ={}).source == f"file {path}"
    assert TrustKeys.load(TrustSpec(key_env="K"), environ={"K": KEY}).source == "$K"
    with pytest.raises(TrustKeyError, match=r"\$K"):
        TrustKeys.load(TrustSpec(key_env="K"), environ={})
    with pytest.raises(TrustKeyError, match="shorter than 32"):
        TrustKeys.load(TrustSpec(key_env="K"), environ={"K": "short"})
    with pytest.raises(TrustKeyError, match="cannot be read"):
        TrustKeys.load(TrustSpec(key_file=str(tmp_path / "missing")))
    assert KEY not in repr(TrustKeys.load(TrustSpec(key_env="K"), environ={"K": KEY}))


def test_rotation_the_first_key_signs_every_key_verifies():
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    during = TrustKeys.load(TrustSpec(key_env="K"), environ={"K": f"{new}\n{old}\n"})
    before = TrustKeys([old.encode()])
    headers = before.sign("ns.agent.small", b"q", b"v")
    assert during.verify("ns.agent.small", b"q", b"v", headers) is None  # in flight from before
    assert during.sign("ns.agent.small", b"q", b"v") == TrustKeys([new.encode()]).sign("ns.agent.small", b"q", b"v")
    assert headers[0][0] == MAC_HEADER


def test_a_tool_finds_the_key_of_the_local_stack_serving_its_namespace(tmp_path, monkeypatch):
    from disrouter.stack.supervisor import StackState, make_trust_key, tool_trust_keys, write_state
    from disrouter.topology.schema import Topology

    monkeypatch.delenv("DISROUTER_TRUST_KEY", raising=False)
    topology = Topology(namespace="chain", agents=[])
    with pytest.raises(TrustKeyError):  # no key anywhere
        tool_trust_keys(topology, tmp_path)
    key = make_trust_key(tmp_path)  # what `disrouter up` does
    assert key.stat().st_mode & 0o777 == 0o600
    write_state(StackState(run_dir=str(tmp_path), bootstrap="127.0.0.1:1", broker_pid=0, ray_address="", ray_temp_dir="",
                           dashboard_port=0, http_port=0, ray_gcs_port=0, namespace="chain"))
    keys = tool_trust_keys(topology, tmp_path)
    assert keys.source == f"file {key}"
    assert keys.verify("chain.agent.a", b"k", b"v", TrustKeys.load(TrustSpec(key_file=str(key))).sign("chain.agent.a", b"k", b"v")) is None
    with pytest.raises(TrustKeyError):  # the stack serves another namespace
        tool_trust_keys(Topology(namespace="other", agents=[]), tmp_path)
    monkeypatch.setenv("DISROUTER_TRUST_KEY", KEY)  # the topology's own source wins
    assert tool_trust_keys(topology, tmp_path).source == "$DISROUTER_TRUST_KEY"
