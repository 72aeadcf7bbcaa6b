"""The topology declaration: typed structs for the `args:` of the Serve application.

A topology file is a plain Ray Serve config. Its application's `args:` hold this schema:

    applications:
      - name: demo
        import_path: disrouter.topology.app:build_app
        args:
          namespace: demo
          kafka: {bootstrap_servers: 127.0.0.1:9092, partitions: 4}
          default_scenario: balance
          agents:
            - {name: small, cost: 0.1, engine: {type: replay, trace: t.jsonl}, next: [large]}
            - {name: large, cost: 0.9, engine: {type: replay, trace: t.jsonl}}

Structural checks (types, unknown fields) happen while decoding; graph checks (unknown
agents, reachability, cycles) live in `validate.py`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from disrouter.actors.config import (
    KafkaCredentials,
    KafkaSpec,
    Limits,
    OnExhausted,
    Policy,
    Prices,
    Timeouts,
    TrustSpec,
)
from disrouter.actors.contracts import Scenario
from disrouter.actors.decision import DEFAULT_GAMMA, AnyCalibration, Awareness

# The Serve deployment that fronts a topology's application (its read-only status view); the
# agents' deployments are named after the agents, so no agent may take this name.
STATUS_DEPLOYMENT = "status"


class Autoscaling(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Replicas from the agent's Kafka backlog (`scaling.py`) instead of a fixed `replicas`.

    The backlog is the records behind the agent's consumers plus the queries in work. More
    replicas than the agent has input partitions sit idle (Kafka gives each partition to one
    consumer of the group), so `max_replicas` beyond that buys nothing.
    """

    max_replicas: int
    min_replicas: int = 1  # ≥ 1: with no replica, nobody reads the backlog that would scale it up
    target_backlog: float | None = None  # per replica; default: the agent's max_in_flight
    look_back_period_s: float = 10.0  # reports are averaged over this window
    metrics_interval_s: float = 2.0  # how often each replica reports
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0


class AgentSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    cost: float
    engine: dict[str, Any]
    # Where a reject goes: one agent for a chain, several for a tree or a mesh.
    next: list[str] = []
    policy: Policy = "first_unvisited"
    # Terminal agents always answer. Default: an agent with nowhere to pass on is terminal.
    terminal: bool | None = None
    awareness: Awareness = "generative"
    calibration: AnyCalibration | None = None
    # Generative mode: reject iff the probability that the reply opens with the reject phrase is
    # at least this (the first step's log-probs; a vLLM engine), instead of whatever greedy
    # decoding says first. Unset: the greedy reply decides (README, "What training bought").
    # One threshold, or one per scenario ({performance_first: …, balance: …, cost_first: …},
    # as `disrouter train calibrate` fits them); a raw α takes its nearest scenario's.
    reject_at: float | dict[Scenario, float] | None = None
    tags: list[str] = []
    prices: Prices | None = None
    replicas: int = 1
    autoscaling: Autoscaling | None = None  # wins over `replicas`
    max_in_flight: int = 32
    max_tokens: int | None = None
    ray_actor_options: dict[str, Any] = {}
    # This agent's own Kafka principal (ACLs per agent); default: the topology's.
    kafka_credentials: KafkaCredentials | None = None
    timeouts: Timeouts | None = None  # default: the topology's

    @property
    def is_terminal(self) -> bool:
        return self.terminal if self.terminal is not None else not self.next


class Topology(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    namespace: str
    agents: list[AgentSpec]
    entry: str | None = None  # default: the first agent
    kafka: KafkaSpec = msgspec.field(default_factory=KafkaSpec)
    default_scenario: Scenario = Scenario.balance
    default_alpha: float | None = None  # overrides default_scenario's α when set
    gamma: float = DEFAULT_GAMMA
    max_hops: int | None = 8
    on_exhausted: OnExhausted = "force"
    limits: Limits = msgspec.field(default_factory=Limits)
    trust: TrustSpec = msgspec.field(default_factory=TrustSpec)
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)

    @property
    def entry_agent(self) -> str:
        return self.entry or self.agents[0].name

    @property
    def alpha(self) -> float:
        return self.default_alpha if self.default_alpha is not None else self.default_scenario.alpha

    def agent(self, name: str) -> AgentSpec:
        for spec in self.agents:
            if spec.name == name:
                return spec
        raise KeyError(name)
