"""Runtime configuration of one agent replica, compiled from the topology by the app builder.

The runtime depends on this struct only, never on the topology package, so the declaration
(topology/) can evolve without the runtime importing it back.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from disrouter.actors.decision import DEFAULT_GAMMA, AnyCalibration, Awareness

Policy = Literal["first_unvisited", "cheapest_unvisited", "tag_match", "hash_unvisited"]
OnExhausted = Literal["force", "unanswered"]


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
    create_topics: bool = True  # agents create missing topics at start (idempotent)
    # A new agent group starts from the earliest offset: queries produced before the agent
    # came up are still answered rather than skipped.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: str = "PLAINTEXT"


class Limits(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Enforced on every message an agent decodes; a breach goes to the dead-letter topic."""

    max_message_bytes: int = 1_048_576
    max_prompt_chars: int = 32_768
    max_hops: int = 32  # ceiling for a query's own max_hops
    max_tags: int = 32
    max_id_chars: int = 256


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
    next: list[Peer] = []
    policy: Policy = "first_unvisited"
    terminal: bool = False
    awareness: Awareness = "generative"
    calibration: AnyCalibration | None = None
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
    all_topics: list[str] = []  # every topic of the namespace, for create-on-start

    @property
    def group_id(self) -> str:
        # One consumer group per agent: its replicas share the partitions.
        return f"{self.namespace}.agent.{self.name}"
