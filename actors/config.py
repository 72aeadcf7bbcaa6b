"""Runtime configuration of one agent replica, compiled from the topology by the app builder.

The runtime depends on this struct only, never on the topology package, so the declaration
(topology/) can evolve without the runtime importing it back.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from disrouter.actors import topics
from disrouter.actors.contracts import Scenario
from disrouter.actors.decision import DEFAULT_GAMMA, AnyCalibration, Awareness, scenario_for_alpha

Policy = Literal["first_unvisited", "cheapest_unvisited", "tag_match", "hash_unvisited"]
OnExhausted = Literal["force", "unanswered"]


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaCredentials(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Who a replica is to the broker: one Kafka principal per agent lets ACLs say what each
    agent may read and write (README, "Trust boundary and delivery guarantees").

    Secrets never sit in the topology (it is a Serve config, shown by the dashboard): the
    password and the key's passphrase are read inside the replica from an environment variable
    or a file.
    """

    sasl_username: str | None = None
    sasl_password_env: str | None = None
    sasl_password_file: str | None = None
    ssl_certfile: str | None = None  # client certificate (mutual TLS)
    ssl_keyfile: str | None = None
    ssl_password_env: str | None = None  # passphrase of ssl_keyfile, if it has one


class KafkaSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = 4
    replication_factor: int = 1
    # Tansu's first group join takes about session_timeout/2, so keep it short locally.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    commit_interval_ms: int = 200
    linger_ms: int = 2
    # How long a fetch may wait on the broker for data. Tansu holds a fetch for the full wait
    # when a partition is idle, which adds this much to every hop's latency: keep it short.
    fetch_max_wait_ms: int = 20
    # A consumer that has not polled for this long leaves its group (aiokafka's default). The
    # worker keeps polling while all its slots are busy, so only a stuck loop gets there.
    max_poll_interval_ms: int = 300_000
    create_topics: bool = True  # agents create missing topics at start (idempotent)
    # A new agent group starts from the earliest offset: queries produced before the agent
    # came up are still answered rather than skipped.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # TLS and SASL, passed through to aiokafka (`kafka.py: connection_options`).
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    ssl_cafile: str | None = None  # the brokers' CA; none: the system's trust store
    ssl_check_hostname: bool = True
    credentials: KafkaCredentials | None = None


# What one hop can add to a query on its way (its `Hop` in the trail): an agent name is at most
# MAX_NAME_CHARS, an engine error is cut to MAX_HOP_ERROR_CHARS, and JSON may escape a
# character to six bytes. Agent topics accept this much per hop on top of the ingress limit, so
# a query the entry accepted never grows past what the next agent accepts.
MAX_NAME_CHARS = 64
MAX_HOP_ERROR_CHARS = 256
HOP_BYTES = 6 * (MAX_NAME_CHARS + MAX_HOP_ERROR_CHARS) + 512


class Limits(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Enforced on every message an agent decodes; a breach goes to the dead-letter topic."""

    max_message_bytes: int = 1_048_576  # a client's query on the ingress topic
    max_prompt_chars: int = 32_768
    max_hops: int = 32  # ceiling for a query's own max_hops
    max_tags: int = 32
    max_id_chars: int = 256

    @property
    def handoff_bytes(self) -> int:
        """The largest query an agent accepts from another agent: the ingress limit plus room
        for a full trail."""
        return self.max_message_bytes + self.max_hops * HOP_BYTES

    @property
    def publish_bytes(self) -> int:
        """The producer's request limit: an answer carries the query's fields, a full trail
        and the reply, so it gets twice the ingress limit on top of the trail room."""
        return 2 * self.max_message_bytes + self.max_hops * HOP_BYTES + 65_536


class TrustSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The trust boundary between clients and agents (see `boundary.py`).

    Agents sign what they pass to each other with a shared HMAC key; a message on an agent's
    own topic without a valid signature is dead-lettered. The key is never in the topology:
    it is read inside each replica from `key_file`, else from the environment variable
    `key_env`. Trusted tools (`disrouter eval --live --forced-alone`) hold the same key.
    """

    key_env: str = "DISROUTER_TRUST_KEY"
    key_file: str | None = None
    # Topic prefixes a client's `reply_to` may name. None: the namespace's own prefix
    # (`<ns>.`). The namespace's internal topics (ingress, dlq, agent topics) are never allowed.
    reply_to_prefixes: list[str] | None = None


class Timeouts(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Bounds that keep one bad message from jamming an agent (README, delivery guarantees)."""

    # One query's engine work at this agent (retries included); past it the query ends
    # `unanswered` with the reason instead of holding its partition's commits forever.
    process_s: float = 600.0
    # Retrying one publish on errors worth retrying (broker away, leader moving); errors not
    # worth retrying (too large, not authorised) fail at once.
    publish_s: float = 30.0
    # Health fails when work has made no progress for this long (a stuck offset, a loop that
    # stopped polling), so Serve replaces the replica. Must exceed the worst handling of one
    # query: process_s plus a few publishes.
    stall_s: float = 900.0
    # On a rebalance, how long work in flight for the revoked partitions may still finish and
    # publish before the rest is fenced (`rebalance.py`): what finishes is never redone. The
    # group waits for it, so this delays every rebalance by up to as much.
    rebalance_grace_s: float = 5.0

    @property
    def publish_attempt_s(self) -> float:
        """One produce attempt's share of `publish_s`: a request that hangs is abandoned and
        sent afresh, rather than spending the whole budget (aiokafka retries a batch within the
        same request; a new send succeeds where that retry keeps failing, as with Tansu after
        it auto-creates a topic)."""
        return max(1.0, self.publish_s / 3)


class Prices(msgspec.Struct, forbid_unknown_fields=True):
    usd_per_1k_tokens_in: float = 0.0
    usd_per_1k_tokens_out: float = 0.0

    def dollars(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.usd_per_1k_tokens_in + tokens_out * self.usd_per_1k_tokens_out) / 1000


class Peer(msgspec.Struct, frozen=True):
    """What an agent knows of a candidate it may pass a rejected query to."""

    name: str
    cost: float
    topic: str
    tags: tuple[str, ...] = ()


class AgentConfig(msgspec.Struct, omit_defaults=True):
    name: str
    namespace: str
    cost: float
    engine: dict[str, Any]
    input_topics: list[str]
    answers_topic: str
    dlq_topic: str
    # Where the answer's text goes as it is generated, for queries that ask (`Query.stream`);
    # None: this agent never streams.
    stream_topic: str | None = None
    next: list[Peer] = []
    policy: Policy = "first_unvisited"
    terminal: bool = False
    awareness: Awareness = "generative"
    calibration: AnyCalibration | None = None
    # Generative: reject by the reject's opening probability, one threshold or one per scenario (schema).
    reject_at: float | dict[Scenario, float] | None = None
    prices: Prices | None = None
    gamma: float = DEFAULT_GAMMA
    default_alpha: float = 0.5
    max_hops: int | None = 8
    on_exhausted: OnExhausted = "force"
    max_in_flight: int = 32
    max_tokens: int | None = None
    engine_retries: int = 2
    drain_timeout_s: float = 10.0
    kafka: KafkaSpec = msgspec.field(default_factory=KafkaSpec)
    limits: Limits = msgspec.field(default_factory=Limits)
    trust: TrustSpec = msgspec.field(default_factory=TrustSpec)
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    all_topics: list[str] = []  # every topic of the namespace, for create-on-start
    # Every agent of the topology, on the entry agent only: where it re-routes hand-offs left on
    # the topic of an agent a redeploy removed (`Agent.reroute`).
    agents: list[Peer] = []

    def reject_at_for(self, alpha: float) -> float | None:
        """The reject threshold at α; per scenario, that of the scenario nearest α (the instruction
        a trained agent knows; a raw α between two is spelled out to it, but was never trained)."""
        if isinstance(self.reject_at, dict):
            return self.reject_at[scenario_for_alpha(alpha)]
        return self.reject_at

    @property
    def ingress_topic(self) -> str:
        # The one topic clients write; every other input carries signed agent hand-offs.
        return topics.ingress(self.namespace)

    @property
    def group_id(self) -> str:
        # One consumer group per agent: its replicas share the partitions.
        return f"{self.namespace}.agent.{self.name}"
