"""Graph checks on a topology: every documented error names the field and the agent."""

from __future__ import annotations

from typing import Any

import pytest

from disrouter.topology.errors import TopologyError
from disrouter.topology.load import parse_topology
from disrouter.topology.schema import Topology
from disrouter.topology.validate import find_cycle

E = {"type": "replay", "trace": "t.jsonl"}


def agent(name: str, *nxt: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "cost": extra.pop("cost", 0.1), "engine": extra.pop("engine", E)}
    if nxt:
        spec["next"] = list(nxt)
    spec.update(extra)
    return spec


def parse(*agents: dict[str, Any], **top: Any) -> Topology:
    return parse_topology({"namespace": top.pop("namespace", "ns"), "agents": list(agents), **top})


def problems(*agents: dict[str, Any], **top: Any) -> list[tuple[str, str]]:
    with pytest.raises(TopologyError) as info:
        parse(*agents, **top)
    err = info.value
    # the message shows every problem with its field
    for field, message in err.problems:
        assert f"{field}: {message}" in str(err)
    return err.problems


def has(found: list[tuple[str, str]], field: str, needle: str) -> bool:
    return any(f == field and needle in m for f, m in found)


# --- valid shapes ------------------------------------------------------------------------------


def test_a_valid_chain():
    t = parse(agent("a", "b"), agent("b", "c"), agent("c"))
    assert t.entry_agent == "a"
    assert [a.is_terminal for a in t.agents] == [False, False, True]


def test_a_valid_tree_and_mesh():
    parse(agent("root", "x", "y", policy="tag_match"), agent("x", "z"), agent("y", "z"), agent("z"))
    mesh = parse(agent("a", "b", "c"), agent("b", "a", "c"), agent("c", "a", "b"), max_hops=3)
    assert not any(a.is_terminal for a in mesh.agents)  # force mode ends every query anyway


def test_a_single_agent_is_a_terminal():
    t = parse(agent("only"))
    assert t.agents[0].is_terminal


def test_explicit_entry():
    t = parse(agent("a"), agent("b", "a"), entry="b")
    assert t.entry_agent == "b"


# --- names and edges ---------------------------------------------------------------------------


def test_unknown_agent_in_next():
    found = problems(agent("a", "b", "ghost"), agent("b"))
    assert has(found, "agents[0] (a).next", "unknown agent 'ghost'")


def test_duplicate_names():
    found = problems(agent("a", "b"), agent("b"), agent("a"))
    assert has(found, "agents[2] (a).name", "duplicate agent name (also agents[0])")


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "caf\u00e9"])
def test_illegal_agent_names(bad):
    found = problems(agent("a", bad), agent(bad))
    assert has(found, f"agents[1] ({bad}).name", "letters, digits")


def test_an_agent_may_not_take_the_status_deployments_name():
    # Serve deploys the application's status view beside the agents; one name, one deployment.
    found = problems(agent("a", "status"), agent("status"))
    assert has(found, "agents[1] (status).name", "name of the application's status deployment")


def test_self_loop():
    found = problems(agent("a", "a", "b"), agent("b"), max_hops=3)
    assert has(found, "agents[0] (a).next", "cannot pass a query to itself")


def test_next_lists_an_agent_twice():
    found = problems(agent("a", "b", "b"), agent("b"))
    assert has(found, "agents[0] (a).next", "lists an agent twice")


def test_terminal_with_next():
    found = problems(agent("a", "b", terminal=True), agent("b"))
    assert has(found, "agents[0] (a).next", "terminal agent always answers")


def test_unknown_entry():
    found = problems(agent("a"), entry="zed")
    assert has(found, "entry", "unknown agent 'zed'")


def test_no_agents():
    assert problems() == [("agents", "at least one agent is needed")]


def test_bad_namespace():
    found = problems(agent("a"), namespace="my ns")
    assert has(found, "namespace", "'my ns'")
    found = problems(agent("a"), namespace="")
    assert has(found, "namespace", "''")


# --- graph -------------------------------------------------------------------------------------


def test_unreachable_agent():
    found = problems(agent("a", "b"), agent("b"), agent("island"))
    assert found == [("agents[2] (island)", "unreachable from the entry agent 'a'")]


def test_unreachable_from_an_explicit_entry():
    found = problems(agent("a", "b"), agent("b"), entry="b")
    assert has(found, "agents[0] (a)", "unreachable from the entry agent 'b'")


def test_cycle_without_max_hops():
    found = problems(agent("a", "b"), agent("b", "c"), agent("c", "a"), max_hops=None)
    assert len(found) == 1
    field, message = found[0]
    assert field == "max_hops"
    assert "cycle" in message and "a → b → c → a" in message and "set max_hops" in message


def test_cycle_with_max_hops_is_fine_and_acyclic_needs_no_bound():
    parse(agent("a", "b"), agent("b", "a"), max_hops=4)
    parse(agent("a", "b"), agent("b"), max_hops=None)


def test_no_terminal_reachable_with_on_exhausted_unanswered():
    # a tree whose leaves are all explicitly non-terminal: the hardest queries end nowhere
    found = problems(
        agent("a", "b", "c"), agent("b", terminal=False), agent("c", terminal=False), on_exhausted="unanswered"
    )
    assert has(found, "agents", "no terminal agent is reachable from the entry")
    assert has(found, "agents", "on_exhausted: force")
    # the same tree is fine when exhausted queries are force-answered
    parse(agent("a", "b", "c"), agent("b", terminal=False), agent("c", terminal=False), on_exhausted="force")


def test_a_terminal_reachable_satisfies_unanswered():
    parse(agent("a", "b", "t"), agent("b", terminal=False), agent("t"), on_exhausted="unanswered")


def test_a_mesh_may_end_queries_unanswered_at_its_hop_bound():
    # documented: with `unanswered` a mesh needs no terminal; its hop bound ends every query
    t = parse(agent("a", "b"), agent("b", "a"), max_hops=4, on_exhausted="unanswered")
    assert t.on_exhausted == "unanswered" and not any(a.is_terminal for a in t.agents)


# --- numbers and engines -----------------------------------------------------------------------


def test_unknown_engine_type():
    found = problems(agent("a", engine={"type": "gpt9", "x": 1}))
    assert has(found, "agents[0] (a).engine.type", "'gpt9' is not a registered engine")
    assert has(found, "agents[0] (a).engine.type", "replay")


def test_engine_without_type():
    found = problems(agent("a", engine={"trace": "t.jsonl"}))
    assert has(found, "agents[0] (a).engine.type", "None is not a registered engine")


@pytest.mark.parametrize(
    ("agent_extra", "top", "field", "needle"),
    [
        ({"cost": -0.1}, {}, "agents[0] (a).cost", "≥ 0"),
        ({"replicas": 0}, {}, "agents[0] (a).replicas", "≥ 1"),
        ({"max_in_flight": 0}, {}, "agents[0] (a).max_in_flight", "≥ 1"),
        ({}, {"default_alpha": 1.5}, "default_alpha", "[0, 1]"),
        ({}, {"gamma": 0}, "gamma", "> 0"),
        ({}, {"max_hops": 0}, "max_hops", "[1, limits.max_hops=32]"),
        ({}, {"max_hops": 33}, "max_hops", "got 33"),
        ({}, {"max_hops": 10, "limits": {"max_hops": 5}}, "max_hops", "limits.max_hops=5"),
        ({}, {"kafka": {"partitions": 0}}, "kafka.partitions", "≥ 1"),
    ],
)
def test_numbers(agent_extra, top, field, needle):
    found = problems(agent("a", **agent_extra), **top)
    assert has(found, field, needle), found


def test_every_problem_is_reported_at_once():
    found = problems(agent("a", "ghost", cost=-1), agent("a"), agent("b", engine={"type": "nope"}))
    fields = {f for f, _ in found}
    assert {"agents[0] (a).next", "agents[0] (a).cost", "agents[1] (a).name", "agents[2] (b).engine.type"} <= fields


def test_error_message_names_the_source():
    from disrouter.topology.validate import validate

    t = Topology(namespace="ns", agents=[])
    with pytest.raises(TopologyError) as info:
        validate(t, "topo.yaml")
    assert str(info.value) == "invalid topology: topo.yaml: agents: at least one agent is needed"
    assert info.value.source == "topo.yaml"


# --- find_cycle --------------------------------------------------------------------------------


def test_find_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({}) is None
    cycle = find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]})
    assert cycle == ["b", "c", "b"]
    # a diamond is not a cycle
    assert find_cycle({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}) is None
    two = find_cycle({"x": ["y"], "y": ["x"]})
    assert two[0] == two[-1] and set(two) == {"x", "y"}


def test_reject_at_is_a_probability_of_a_generative_agent():
    parse(agent("a", "b", reject_at=0.5), agent("b"))
    found = problems(agent("a", "b", reject_at=0.0), agent("b", "c", reject_at=1.5), agent("c", awareness="confidence", reject_at=0.5))
    assert has(found, "agents[0] (a).reject_at", "within (0, 1], got 0.0")
    assert has(found, "agents[1] (b).reject_at", "within (0, 1], got 1.5")
    assert has(found, "agents[2] (c).reject_at", "awareness: confidence")


def test_reject_at_per_scenario_names_every_scenario_and_each_threshold_is_a_probability():
    full = {"performance_first": 0.55, "balance": 0.65, "cost_first": 0.8}
    parsed = parse(agent("a", "b", reject_at=full), agent("b"))
    assert {s.value: t for s, t in parsed.agents[0].reject_at.items()} == full
    found = problems(agent("a", "b", reject_at={**full, "cost_first": 1.2}), agent("b", "c", reject_at={"balance": 0.5}), agent("c"))
    assert has(found, "agents[0] (a).reject_at.cost_first", "within (0, 1], got 1.2")
    assert has(found, "agents[1] (b).reject_at", "no threshold for performance_first, cost_first")
    with pytest.raises(TopologyError, match="reject_at"):
        parse(agent("a", "b", reject_at={"cheap_first": 0.5}), agent("b"))  # not a scenario
