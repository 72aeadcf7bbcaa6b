"""Graph checks on a decoded topology; every problem names its field and agent.

What is checked, and why:
- names: unique, legal in a Kafka topic name (each agent gets `<ns>.agent.<name>`);
- edges: `next` names known agents, never the agent itself, never twice;
- entry: exists; every agent is reachable from it (an unreachable agent only burns a GPU);
- endings: a query that every agent rejects must end somewhere. A `terminal` agent always
  answers; with `on_exhausted: force` any agent with nothing left to pass to answers (forced);
  with `on_exhausted: unanswered` a chain or tree must still reach a terminal agent, while a
  mesh may end such queries "unanswered" (with the reason) at its hop bound;
- cycles (meshes) need a hop bound (`max_hops`) on top of the visited set;
- numbers: costs ≥ 0, α in [0, 1], γ > 0, replicas/in-flight/partitions ≥ 1, autoscaling
  bounds 1 ≤ min ≤ max;
- engines: a registered `type`;
- trust and liveness: `reply_to_prefixes` are non-empty topic prefixes; timeouts are positive
  and the stall bound exceeds one query's worst handling; SASL names its user.
"""

from __future__ import annotations

from disrouter.actors.config import MAX_NAME_CHARS, KafkaCredentials, Timeouts
from disrouter.actors.contracts import Scenario
from disrouter.actors.engine import engine_types
from disrouter.actors.topics import is_legal_topic
from disrouter.topology.errors import TopologyError
from disrouter.topology.schema import STATUS_DEPLOYMENT, Topology


def _timeout_problems(field: str, t: Timeouts) -> list[tuple[str, str]]:
    problems = []
    for name in ("process_s", "publish_s", "stall_s"):
        if getattr(t, name) <= 0:
            problems.append((f"{field}.{name}", f"must be > 0, got {getattr(t, name)}"))
    if t.rebalance_grace_s < 0:
        problems.append((f"{field}.rebalance_grace_s", f"must be ≥ 0, got {t.rebalance_grace_s}"))
    if t.stall_s <= t.process_s + t.publish_s:
        problems.append((f"{field}.stall_s", f"must exceed process_s + publish_s ({t.process_s + t.publish_s:g}): "
                                             "a query still within its bounds is not a stall"))
    return problems


def _sasl_problem(protocol: str, creds: KafkaCredentials | None) -> str | None:
    if not protocol.startswith("SASL_"):
        return None
    if creds is None or not creds.sasl_username:
        return f"security_protocol {protocol} needs credentials.sasl_username"
    if not (creds.sasl_password_env or creds.sasl_password_file):
        return f"security_protocol {protocol} needs credentials.sasl_password_env or sasl_password_file"
    return None


def _reachable(start: str, edges: dict[str, list[str]]) -> set[str]:
    seen, stack = {start}, [start]
    while stack:
        for nxt in edges.get(stack.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """One cycle as a list of agent names (first repeated at the end), or None."""
    colour: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        path.append(node)
        for nxt in edges.get(node, []):
            if colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        path.pop()
        colour[node] = 2
        return None

    for node in edges:
        if node not in colour and (found := visit(node)):
            return found
    return None


def validate(topology: Topology, source: str | None = None) -> None:
    problems: list[tuple[str, str]] = []

    def problem(field: str, message: str) -> None:
        problems.append((field, message))

    if not is_legal_topic(f"{topology.namespace}.agent.x") or not topology.namespace:
        problem("namespace", f"{topology.namespace!r} must be letters, digits, '.', '_' or '-'")
    if not topology.agents:
        problem("agents", "at least one agent is needed")
        raise TopologyError(problems, source)

    names: dict[str, int] = {}
    for i, agent in enumerate(topology.agents):
        where = f"agents[{i}] ({agent.name})"
        if agent.name in names:
            problem(f"{where}.name", f"duplicate agent name (also agents[{names[agent.name]}])")
        names.setdefault(agent.name, i)
        if not agent.name or not is_legal_topic(agent.name):
            problem(f"{where}.name", "must be non-empty letters, digits, '.', '_' or '-'")
        elif len(agent.name) > MAX_NAME_CHARS:
            # Each hop of a trail names its agent; hand-offs have room for names this long.
            problem(f"{where}.name", f"must be at most {MAX_NAME_CHARS} characters")
        elif agent.name == STATUS_DEPLOYMENT:
            problem(f"{where}.name", f"{STATUS_DEPLOYMENT!r} is the name of the application's status deployment; pick another")
        if agent.timeouts is not None:
            problems.extend(_timeout_problems(f"{where}.timeouts", agent.timeouts))
        sasl = _sasl_problem(topology.kafka.security_protocol, agent.kafka_credentials or topology.kafka.credentials)
        if sasl and (agent.kafka_credentials is not None or topology.kafka.credentials is not None):
            problem(f"{where}.kafka_credentials", sasl)
        if agent.cost < 0:
            problem(f"{where}.cost", f"must be ≥ 0, got {agent.cost}")
        if agent.replicas < 1:
            problem(f"{where}.replicas", f"must be ≥ 1, got {agent.replicas}")
        if agent.autoscaling is not None:
            scale = agent.autoscaling
            if scale.min_replicas < 1:
                problem(f"{where}.autoscaling.min_replicas", f"must be ≥ 1 (no replica reads the backlog), got {scale.min_replicas}")
            if scale.max_replicas < scale.min_replicas:
                problem(f"{where}.autoscaling.max_replicas", f"must be ≥ min_replicas ({scale.min_replicas}), got {scale.max_replicas}")
            if scale.target_backlog is not None and scale.target_backlog <= 0:
                problem(f"{where}.autoscaling.target_backlog", f"must be > 0, got {scale.target_backlog}")
            if scale.look_back_period_s <= scale.metrics_interval_s:
                problem(f"{where}.autoscaling.look_back_period_s",
                        f"must exceed metrics_interval_s ({scale.metrics_interval_s:g}), got {scale.look_back_period_s:g}")
        if agent.max_in_flight < 1:
            problem(f"{where}.max_in_flight", f"must be ≥ 1, got {agent.max_in_flight}")
        if agent.reject_at is not None:
            thresholds = agent.reject_at if isinstance(agent.reject_at, dict) else {None: agent.reject_at}
            for scenario, threshold in thresholds.items():
                field = f"{where}.reject_at" + (f".{scenario.value}" if scenario is not None else "")
                if not 0.0 < threshold <= 1.0:
                    problem(field, f"must be within (0, 1], got {threshold}")
            if isinstance(agent.reject_at, dict) and (missing := [s.value for s in Scenario if s not in agent.reject_at]):
                problem(f"{where}.reject_at", f"names no threshold for {', '.join(missing)} (a query may bring any scenario)")
            if agent.awareness != "generative":
                problem(f"{where}.reject_at", "decides a generative agent's reject; this agent has `awareness: confidence`")
        kind = agent.engine.get("type")
        if kind not in engine_types():
            problem(f"{where}.engine.type", f"{kind!r} is not a registered engine ({', '.join(engine_types())})")
        if agent.terminal and agent.next:
            problem(f"{where}.next", "a terminal agent always answers, so it cannot pass queries on")
        if len(set(agent.next)) != len(agent.next):
            problem(f"{where}.next", "lists an agent twice")
        if agent.name in agent.next:
            problem(f"{where}.next", "an agent cannot pass a query to itself")

    for i, agent in enumerate(topology.agents):
        for nxt in agent.next:
            if nxt not in names:
                problem(f"agents[{i}] ({agent.name}).next", f"unknown agent {nxt!r}")

    if topology.entry is not None and topology.entry not in names:
        problem("entry", f"unknown agent {topology.entry!r}")
    if topology.default_alpha is not None and not 0.0 <= topology.default_alpha <= 1.0:
        problem("default_alpha", f"must be within [0, 1], got {topology.default_alpha}")
    if topology.gamma <= 0:
        problem("gamma", f"must be > 0, got {topology.gamma}")
    if topology.max_hops is not None and not 1 <= topology.max_hops <= topology.limits.max_hops:
        problem("max_hops", f"must be within [1, limits.max_hops={topology.limits.max_hops}], got {topology.max_hops}")
    if topology.kafka.partitions < 1:
        problem("kafka.partitions", f"must be ≥ 1, got {topology.kafka.partitions}")
    if topology.kafka.security_protocol.startswith("SASL_") and topology.kafka.credentials is None and any(
        a.kafka_credentials is None for a in topology.agents
    ):
        problem("kafka.credentials", f"security_protocol {topology.kafka.security_protocol} needs credentials "
                                     "(here, or `kafka_credentials` on every agent)")
    elif (sasl := _sasl_problem(topology.kafka.security_protocol, topology.kafka.credentials)) and topology.kafka.credentials:
        problem("kafka.credentials", sasl)
    problems.extend(_timeout_problems("timeouts", topology.timeouts))
    for i, prefix in enumerate(topology.trust.reply_to_prefixes or []):
        if not prefix or not is_legal_topic(prefix):
            problem(f"trust.reply_to_prefixes[{i}]", f"{prefix!r} must be a non-empty topic prefix (letters, digits, '.', '_' or '-')")
    if topology.trust.key_file is None and not topology.trust.key_env:
        problem("trust", "needs key_env or key_file (where replicas read the shared hand-off key)")
    # Graph checks run on the known part of the graph, so one file shows every problem at once.
    edges = {a.name: [n for n in a.next if n in names] for a in topology.agents}
    reachable = _reachable(topology.entry_agent, edges) if topology.entry_agent in names else set(names)
    for i, agent in enumerate(topology.agents):
        if agent.name not in reachable:
            problem(f"agents[{i}] ({agent.name})", f"unreachable from the entry agent {topology.entry_agent!r}")

    cycle = find_cycle(edges)
    if cycle and topology.max_hops is None:
        problem("max_hops", f"the topology has a cycle ({' → '.join(cycle)}) and no hop bound: set max_hops")
    if topology.on_exhausted == "unanswered" and not cycle:
        # In a chain or tree the hardest queries must end at an agent that answers; a mesh may
        # deliberately end them "unanswered" at its hop bound instead.
        terminals = {a.name for a in topology.agents if a.is_terminal}
        if not terminals & reachable:
            problem(
                "agents",
                "no terminal agent is reachable from the entry: mark one `terminal: true` "
                "or set `on_exhausted: force`",
            )

    if problems:
        raise TopologyError(problems, source)
