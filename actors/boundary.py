"""The trust boundary: what a client may ask for, and what only agents may write.

An agent reads two kinds of input, told apart by topic:

- `<ns>.ingress` (clients): a client sets the prompt, its scenario or α, tags, metadata, an id,
  a lower hop bound, a `reply_to` the topology allows, and whether the answer's text is
  streamed while generated (`stream`, to `<ns>.stream`, never elsewhere). The fields only agents write
  (`contracts.AGENT_ONLY_FIELDS`: the trail, from which visited agents, `forced` and the
  totals derive, and `force_answer`) are refused.
- `<ns>.agent.<name>` (hand-offs): only messages signed with the shared trust key
  (`trust.py`) are accepted; they may carry a trail and `force_answer`. Trusted tools that
  hold the key (the live evaluation's forced phase) write here too.

Every refusal is a `MalformedMessage` (so the message goes to the dead-letter topic with the
reason, and the agent carries on). `reply_to` is checked on both sides: an agent never writes
an answer outside the topics the topology allows, nor into the namespace's internal topics.
"""

from __future__ import annotations

import msgspec

from disrouter.actors import topics
from disrouter.actors.config import AgentConfig
from disrouter.actors.contracts import AGENT_ONLY_FIELDS, Query
from disrouter.actors.envelope import Envelope
from disrouter.actors.errors import MalformedMessage
from disrouter.actors.trust import TrustKeys

_DEFAULTS = Query(prompt="-")


def reply_to_problem(namespace: str, prefixes: list[str] | None, reply_to: str) -> str | None:
    """Why an answer may not be written to `reply_to`, or None when it may."""
    internal = {topics.ingress(namespace), topics.dlq(namespace), topics.stream(namespace)}
    if reply_to in internal or reply_to.startswith(topics.agent(namespace, "")):
        return f"`reply_to` {reply_to!r} is an internal topic of namespace {namespace!r}"
    allowed = prefixes if prefixes is not None else [f"{namespace}."]
    if not any(reply_to.startswith(prefix) for prefix in allowed):
        return f"`reply_to` {reply_to!r} is not allowed: it must start with {' or '.join(map(repr, allowed))} (trust.reply_to_prefixes)"
    return None


class Boundary:
    """Admits the records of one agent's input topics as Queries, or refuses them."""

    def __init__(self, config: AgentConfig, keys: TrustKeys, envelope: Envelope) -> None:
        self.config = config
        self.keys = keys
        self.envelope = envelope

    def admit(self, topic: str, key: bytes | None, value: bytes | None, headers=()) -> Query:
        if topic == self.config.ingress_topic:
            query = self.envelope.decode(value, key)
            for field in AGENT_ONLY_FIELDS:
                if getattr(query, field) != getattr(_DEFAULTS, field):
                    raise MalformedMessage(
                        "forbidden", f"`{field}` is written by agents only; a client may not set it on {topic}"
                    )
        else:
            if value is not None:
                problem = self.keys.verify(topic, key, value, headers)
                if problem is not None:
                    raise MalformedMessage(
                        "untrusted",
                        f"{topic} takes hand-offs signed by agents or trusted tools only ({problem}); "
                        f"clients produce to {self.config.ingress_topic}",
                    )
            query = self.envelope.decode(value, key, max_bytes=self.config.limits.handoff_bytes)
        if query.reply_to is not None:
            problem = reply_to_problem(self.config.namespace, self.config.trust.reply_to_prefixes, query.reply_to)
            if problem is not None:
                raise MalformedMessage("forbidden", problem)
        return query

    def sign(self, topic: str, key: bytes | None, value: bytes) -> list[tuple[str, bytes]]:
        return self.keys.sign(topic, key, value)


def signed_query(keys: TrustKeys, topic: str, query: Query, encoder: msgspec.json.Encoder | None = None) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) for a hand-off a trusted tool produces straight to an agent topic."""
    if not query.id:
        raise ValueError("a signed query needs an id (it is the Kafka key the signature covers)")
    value = (encoder or msgspec.json.Encoder()).encode(query)
    key = query.id.encode()
    return key, value, keys.sign(topic, key, value)
