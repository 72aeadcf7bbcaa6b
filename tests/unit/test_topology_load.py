"""Reading topology files: YAML → Serve config → Topology → AgentConfigs, with named errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest

from disrouter.actors.contracts import Scenario
from disrouter.actors.decision import PlattCalibration
from disrouter.topology.compile import actor_options, agent_configs
from disrouter.topology.errors import TopologyError
from disrouter.topology.load import BUILDER, find_application, load_topology, parse_topology, read_yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(tmp_path: Path, text: str, name: str = "topo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def serve_config(args_yaml: str) -> str:
    """A Serve config around an `args:` block (given at column 0, indented here)."""
    args = textwrap.indent(textwrap.dedent(args_yaml).strip("\n"), " " * 6)
    return f"applications:\n  - name: app\n    import_path: {BUILDER}\n    args:\n{args}\n"


def load_error(tmp_path: Path, text: str) -> TopologyError:
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(path) in str(info.value)  # the file is named
    return info.value


GOOD = """
namespace: demo
agents:
  - name: small
    cost: 0.1
    engine: {type: replay, trace: ./trace.jsonl}
    next: [large]
  - name: large
    cost: 0.9
    engine: {type: replay, trace: pkg:disrouter.examples/replay-trace.jsonl}
"""


# --- the examples ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chain", "tree", "mesh"])
def test_examples_load_and_validate(name):
    config, topology = load_topology(EXAMPLES / f"{name}.yaml")
    assert config["applications"][0]["import_path"] == BUILDER
    assert topology.namespace == name
    assert topology.entry_agent == "small"
    configs = agent_configs(topology)
    assert set(configs) == {a.name for a in topology.agents}
    # every engine is the bundled replay trace, left as a package reference
    for a in topology.agents:
        assert a.engine["type"] == "replay"
        assert a.engine["trace"] == "pkg:disrouter.examples/replay-trace.jsonl"


def test_chain_example_shape():
    _, t = load_topology(EXAMPLES / "chain.yaml")
    assert [(a.name, a.cost, a.next, a.is_terminal) for a in t.agents] == [
        ("small", 0.1, ["medium"], False),
        ("medium", 0.4, ["large"], False),
        ("large", 0.9, [], True),
    ]
    assert t.default_scenario is Scenario.balance and t.alpha == 0.5


def test_tree_example_shape():
    _, t = load_topology(EXAMPLES / "tree.yaml")
    small = t.agent("small")
    assert small.policy == "tag_match" and small.next == ["math", "code"]
    assert t.agent("math").tags == ["math"] and t.agent("code").tags == ["code"]
    assert t.agent("large").is_terminal
    assert [a.name for a in t.agents if a.is_terminal] == ["large"]


def test_mesh_example_shape():
    _, t = load_topology(EXAMPLES / "mesh.yaml")
    assert t.max_hops == 3 and t.on_exhausted == "force"
    assert all(a.policy == "hash_unvisited" for a in t.agents)
    assert all(len(a.next) == 2 and a.name not in a.next for a in t.agents)
    assert not any(a.is_terminal for a in t.agents)


# --- compile -----------------------------------------------------------------------------------


def test_compile_topics_peers_and_defaults():
    t = parse_topology(
        msgspec.yaml.decode(
            textwrap.dedent(
                """
                namespace: demo
                default_scenario: cost_first
                gamma: 0.7
                max_hops: 4
                on_exhausted: unanswered
                kafka: {bootstrap_servers: "h:1", partitions: 3}
                limits: {max_prompt_chars: 10}
                agents:
                  - {name: a, cost: 0.1, engine: {type: replay, trace: t}, next: [b, c], policy: tag_match,
                     awareness: confidence, calibration: {type: platt, a: 2.0}, max_in_flight: 7, max_tokens: 64}
                  - {name: b, cost: 0.5, tags: [math], engine: {type: replay, trace: t}}
                  - {name: c, cost: 0.3, engine: {type: replay, trace: t}}
                """
            )
        )
    )
    cfgs = agent_configs(t)
    a, b = cfgs["a"], cfgs["b"]
    assert a.input_topics == ["demo.ingress", "demo.agent.a"]  # the entry also reads the ingress
    assert b.input_topics == ["demo.agent.b"]
    assert a.answers_topic == "demo.answers" and a.dlq_topic == "demo.dlq" and a.stream_topic == "demo.stream"
    assert [(p.name, p.cost, p.topic, p.tags) for p in a.next] == [
        ("b", 0.5, "demo.agent.b", ("math",)),
        ("c", 0.3, "demo.agent.c", ()),
    ]
    assert (a.policy, a.terminal, b.terminal) == ("tag_match", False, True)
    assert a.awareness == "confidence" and a.calibration == PlattCalibration(a=2.0, b=0.0)
    assert (a.gamma, a.default_alpha, a.max_hops, a.on_exhausted) == (0.7, 0.8, 4, "unanswered")
    assert (a.max_in_flight, a.max_tokens) == (7, 64)
    assert a.kafka.bootstrap_servers == "h:1" and a.kafka.partitions == 3
    assert a.limits.max_prompt_chars == 10
    assert a.group_id == "demo.agent.a"
    assert set(a.all_topics) == {"demo.ingress", "demo.answers", "demo.stream", "demo.dlq", "demo.agent.a", "demo.agent.b", "demo.agent.c"}


def test_compile_entry_other_than_the_first():
    t = parse_topology(
        {
            "namespace": "n",
            "entry": "b",
            "agents": [
                {"name": "a", "cost": 0.1, "engine": {"type": "replay", "trace": "t"}},
                {"name": "b", "cost": 0.1, "engine": {"type": "replay", "trace": "t"}, "next": ["a"]},
            ],
        }
    )
    cfgs = agent_configs(t)
    assert cfgs["b"].input_topics[0] == "n.ingress"
    assert "n.ingress" not in cfgs["a"].input_topics


def test_actor_options_default_cpus():
    assert actor_options({}) == {"num_cpus": 0.25}
    assert actor_options({"num_cpus": 2, "num_gpus": 1}) == {"num_cpus": 2, "num_gpus": 1}


# --- paths -------------------------------------------------------------------------------------


def test_relative_engine_paths_resolve_against_the_file(tmp_path):
    sub = tmp_path / "topos"
    sub.mkdir()
    path = write(sub, serve_config(GOOD))
    config, t = load_topology(path)
    assert t.agent("small").engine["trace"] == str((sub / "trace.jsonl").resolve())
    # package references are left alone
    assert t.agent("large").engine["trace"] == "pkg:disrouter.examples/replay-trace.jsonl"
    # the returned Serve config carries the resolved topology for `serve deploy`
    args = config["applications"][0]["args"]
    assert args["agents"][0]["engine"]["trace"] == str((sub / "trace.jsonl").resolve())
    assert parse_topology(args) == t


def test_relative_adapter_paths_resolve_against_the_file(tmp_path):
    """Both adapters of a gated agent (`lora` answers, `gate_lora` decides) are paths too."""
    sub = tmp_path / "topos"
    sub.mkdir()
    text = GOOD.replace(
        "engine: {type: replay, trace: ./trace.jsonl}",
        "engine: {type: vllm, model: smollm2-135m-instruct, lora: {name: a, path: ./answers}, gate_lora: {name: g, path: ../gate}}",
    )
    _, t = load_topology(write(sub, serve_config(text)))
    engine = t.agent("small").engine
    assert engine["lora"] == {"name": "a", "path": str((sub / "answers").resolve())}
    assert engine["gate_lora"] == {"name": "g", "path": str((tmp_path / "gate").resolve())}
    assert engine["model"] == "smollm2-135m-instruct"  # a model-store id, not a path


def test_app_name_selects_among_applications(tmp_path):
    text = serve_config(GOOD) + (
        "  - name: other\n"
        f"    import_path: {BUILDER}\n"
        "    args:\n"
        "      namespace: second\n"
        "      agents: [{name: solo, cost: 0.2, engine: {type: replay, trace: t}}]\n"
        "  - name: unrelated\n"
        "    import_path: some.other:app\n"
    )
    path = write(tmp_path, text)
    assert load_topology(path)[1].namespace == "demo"  # the first of ours by default
    assert load_topology(path, "other")[1].namespace == "second"
    with pytest.raises(TopologyError, match="name 'missing'"):
        load_topology(path, "missing")


# --- file-level errors -------------------------------------------------------------------------


def test_bad_yaml_names_the_line(tmp_path):
    err = load_error(
        tmp_path,
        """
        applications:
          - name: app
            args: {namespace: x
            import_path: y
        """,
    )
    (field, message), = err.problems
    assert field.startswith("line ") and ", column " in field
    assert "not valid YAML" in message


def test_bad_yaml_line_number_is_the_real_one(tmp_path):
    text = "applications:\n  - name: app\n    import_path: x\n    args: [unclosed\n    other: 1\n"
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as info:
        read_yaml(path)
    (field, _), = info.value.problems
    line = int(field.split()[1].rstrip(","))
    assert 4 <= line <= 5  # the error is at the unclosed list, not at the top


def test_missing_file(tmp_path):
    with pytest.raises(TopologyError, match="does not exist"):
        load_topology(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["- just\n- a list\n", "42\n", ""])
def test_file_must_be_a_mapping(tmp_path, text):
    err = load_error(tmp_path, text)
    assert err.problems[0][0] == "file"


def test_no_applications(tmp_path):
    err = load_error(tmp_path, "http_options: {port: 8000}\n")
    assert err.problems[0][0] == "applications"


def test_no_disrouter_application(tmp_path):
    err = load_error(tmp_path, "applications:\n  - name: x\n    import_path: other.module:app\n")
    field, message = err.problems[0]
    assert field == "applications[].import_path" and BUILDER in message


# --- field errors ------------------------------------------------------------------------------


def field_error(tmp_path: Path, args_yaml: str) -> tuple[str, str]:
    err = load_error(tmp_path, serve_config(args_yaml))
    assert len(err.problems) == 1, err.problems
    return err.problems[0]


def test_unknown_agent_field_names_agent_and_field(tmp_path):
    field, message = field_error(
        tmp_path,
        """
        namespace: demo
        agents:
          - {name: small, cost: 0.1, engine: {type: replay, trace: t}, next: [large]}
          - {name: large, cost: 0.9, engine: {type: replay, trace: t}, nxet: []}
        """,
    )
    assert field == "agents[1] (large)"
    assert "unknown field `nxet`" in message


def test_unknown_top_level_field(tmp_path):
    field, message = field_error(
        tmp_path,
        """
        namespace: demo
        max_hop: 3
        agents: [{name: a, cost: 0.1, engine: {type: replay, trace: t}}]
        """,
    )
    assert field == "args" and "unknown field `max_hop`" in message


@pytest.mark.parametrize(
    ("agent_yaml", "field", "needle"),
    [
        ("{name: small, cost: cheap, engine: {type: replay, trace: t}}", "agents[1] (small).cost", "Expected `float`, got `str`"),
        ("{name: small, cost: 0.1, engine: {type: replay, trace: t}, next: large}", "agents[1] (small).next", "Expected `array`"),
        ("{name: small, cost: 0.1, engine: {type: replay, trace: t}, policy: random}", "agents[1] (small).policy", "'random'"),
        ("{name: small, cost: 0.1, engine: {type: replay, trace: t}, replicas: two}", "agents[1] (small).replicas", "Expected `int`"),
        ("{name: small, cost: 0.1, engine: {type: replay, trace: t}, awareness: psychic}", "agents[1] (small).awareness", "'psychic'"),
        ("{name: small, cost: 0.1, engine: {type: replay, trace: t}, calibration: {type: isotonic, x: [0.5, 0.1], y: [0, 1]}}",
         "agents[1] (small).calibration", "sorted"),
        ("{name: small, cost: 0.1, engine: {type: replay, trace: t}, calibration: {type: platt, c: 1}}",
         "agents[1] (small).calibration", "`c`"),
        ("{name: small, cost: 0.1, engine: replay}", "agents[1] (small).engine", "Expected `object`"),
        ("{name: small, cost: 0.1}", "agents[1] (small)", "missing required field `engine`"),
        ("{name: small, cost: 0.1, engine: {type: replay, trace: t}, prices: {usd_per_1k: 1}}",
         "agents[1] (small).prices", "usd_per_1k"),
    ],
)
def test_wrong_types_name_agent_and_field(tmp_path, agent_yaml, field, needle):
    got_field, message = field_error(
        tmp_path,
        f"""
        namespace: demo
        agents:
          - {{name: first, cost: 0.1, engine: {{type: replay, trace: t}}, next: [small]}}
          - {agent_yaml}
        """,
    )
    assert got_field == field
    assert needle in message


def test_agent_without_a_name_still_gets_a_path(tmp_path):
    field, message = field_error(tmp_path, "namespace: demo\nagents:\n  - {cost: 0.1, engine: {type: replay, trace: t}}\n")
    assert field == "agents[0]" and "`name`" in message


@pytest.mark.parametrize(
    ("top_yaml", "field", "needle"),
    [
        ("default_scenario: speedy", "default_scenario", "'speedy'"),
        ("on_exhausted: shrug", "on_exhausted", "'shrug'"),
        ("kafka: {partitions: many}", "kafka.partitions", "Expected `int`"),
        ("kafka: {brokers: x}", "kafka", "`brokers`"),
        ("limits: {max_hops: 1.5}", "limits.max_hops", "Expected `int`"),
        ("max_hops: [3]", "max_hops", "Expected `int | null`"),
    ],
)
def test_top_level_wrong_types(tmp_path, top_yaml, field, needle):
    got_field, message = field_error(
        tmp_path,
        f"namespace: demo\n{top_yaml}\nagents: [{{name: a, cost: 0.1, engine: {{type: replay, trace: t}}}}]\n",
    )
    assert got_field == field
    assert needle in message


def test_graph_errors_from_a_file_name_the_file_and_agent(tmp_path):
    err = load_error(
        tmp_path,
        serve_config(
            """
            namespace: demo
            agents:
              - {name: small, cost: 0.1, engine: {type: replay, trace: t}, next: [larg]}
              - {name: large, cost: 0.9, engine: {type: replay, trace: t}}
            """
        ),
    )
    assert ("agents[0] (small).next", "unknown agent 'larg'") in err.problems


def test_find_application_requires_a_list():
    with pytest.raises(TopologyError):
        find_application({"applications": {"name": "x"}})
