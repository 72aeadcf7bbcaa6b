"""`disrouter render k8s`: the topology file stays the single source of what a cluster runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from disrouter.topology import k8s
from disrouter.topology.compile import agent_configs
from disrouter.topology.errors import TopologyError
from disrouter.topology.load import load_topology, read_yaml
from tests.k8s.conftest import K8S, OVERLAYS, ROOT, of_kind

TOPOLOGIES = [K8S / "overlays" / name / "topology.yaml" for name in OVERLAYS] + [ROOT / "examples" / "chain.yaml", ROOT / "examples" / "mesh.yaml"]


def _copy_overlay(tmp_path: Path, name: str = "dev") -> Path:
    """An overlay in a scratch k8s/ tree (base included), so tests may change it."""
    shutil.copytree(K8S / "base", tmp_path / "k8s" / "base")
    shutil.copytree(K8S / "overlays" / name, tmp_path / "k8s" / "overlays" / name)
    return tmp_path / "k8s" / "overlays" / name


def _edit_topology(path: Path, edit) -> None:
    config = read_yaml(path)
    edit(config["applications"][0])
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_render_round_trips_into_the_same_serve_config(topology, tmp_path):
    rendered = k8s.render(topology)
    # What serveConfigV2 carries reads back as exactly the Serve config `serve deploy` reads.
    assert yaml.safe_load(rendered.files[k8s.SERVE_CONFIG_FILE]) == read_yaml(topology)
    # …and as the same topology, compiled to the same per-replica configs (no path in these
    # topologies is relative, so where the copy lies changes nothing).
    copy = tmp_path / "serve-config.yaml"
    copy.write_text(rendered.files[k8s.SERVE_CONFIG_FILE])
    _, again = load_topology(copy)
    _, original = load_topology(topology)
    assert again == original
    assert agent_configs(again) == agent_configs(original)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_serve_config_survives_kustomize_into_the_rayservice(overlay, built):
    (service,) = of_kind(built[overlay], "RayService")
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == read_yaml(K8S / "overlays" / overlay / "topology.yaml")
    # The ConfigMap that carried it is local-config: not part of what gets applied (the one
    # ConfigMap applied is the Grafana dashboard's).
    assert [c["metadata"]["name"] for c in of_kind(built[overlay], "ConfigMap")] == ["disrouter-grafana-dashboard"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_committed_overlay_files_equal_a_fresh_render(overlay):
    path = K8S / "overlays" / overlay
    assert k8s.stale(k8s.render(path / "topology.yaml"), path) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_kafka_topic_per_topic_of_the_topology(overlay, built):
    _, topology = load_topology(K8S / "overlays" / overlay / "topology.yaml")
    names = sorted(t["spec"]["topicName"] for t in of_kind(built[overlay], "KafkaTopic"))
    ns = topology.namespace
    assert names == sorted([f"{ns}.ingress", f"{ns}.answers", f"{ns}.stream", f"{ns}.dlq", *(f"{ns}.agent.{a.name}" for a in topology.agents)])
    for topic in of_kind(built[overlay], "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == k8s.KAFKA_CLUSTER
        assert topic["spec"]["replicas"] == topology.kafka.replication_factor


def test_partitions_follow_the_replicas_asked_for(tmp_path):
    overlay = _copy_overlay(tmp_path, "h100")
    topology = overlay / "topology.yaml"

    def scale(app):
        app["deployments"] = [{"name": "qwen-0-5b", "num_replicas": 6}, {"name": "qwen-7b", "num_replicas": 5}]

    _edit_topology(topology, scale)
    plan = {t.name: t for t in k8s.render(topology).topics}
    assert plan["disrouter.agent.qwen-0-5b"].partitions == 6
    assert plan["disrouter.ingress"].partitions == 6  # the entry agent reads ingress too
    assert plan["disrouter.agent.qwen-7b"].partitions == 5
    assert plan["disrouter.agent.qwen-3b"].partitions == 4  # the topology's default
    assert plan["disrouter.answers"].readers == ()


def test_adding_an_agent_only_adds_its_topic(tmp_path):
    overlay = _copy_overlay(tmp_path, "h100")
    topology = overlay / "topology.yaml"
    before = k8s.render(topology)

    def add(app):
        agents = app["args"]["agents"]
        agents[-1]["next"] = ["qwen-72b"]
        agents.append({"name": "qwen-72b", "cost": 1.0, "engine": {"type": "vllm", "model": "Qwen/Qwen2.5-72B-Instruct", "tensor_parallel_size": 4},
                       "ray_actor_options": {"num_cpus": 16, "num_gpus": 4}})

    _edit_topology(topology, add)
    after = k8s.render(topology)
    old = {t["spec"]["topicName"]: t for t in yaml.safe_load_all(before.files[k8s.TOPICS_FILE])}
    new = {t["spec"]["topicName"]: t for t in yaml.safe_load_all(after.files[k8s.TOPICS_FILE])}
    assert set(new) - set(old) == {"disrouter.agent.qwen-72b"}
    assert {name: new[name] for name in old} == old  # no other topic changes
    old_agents = read_yaml(K8S / "overlays" / "h100" / "topology.yaml")["applications"][0]["args"]["agents"]
    new_agents = yaml.safe_load(after.files[k8s.SERVE_CONFIG_FILE])["applications"][0]["args"]["agents"]
    changed = [a["name"] for a, b in zip(old_agents, new_agents) if a != b]
    assert changed == ["qwen-14b"]  # only the link: the former terminal's `next`


def test_a_replica_count_kafka_cannot_size_is_refused(tmp_path):
    overlay = _copy_overlay(tmp_path)
    _edit_topology(overlay / "topology.yaml", lambda app: app.__setitem__("deployments", [{"name": "qwen", "num_replicas": "auto"}]))
    with pytest.raises(TopologyError, match=r"deployments\[0\] \(qwen\)\.num_replicas"):
        k8s.render(overlay / "topology.yaml")


def test_relative_engine_path_names_the_field(tmp_path):
    topology = tmp_path / "t.yaml"
    shutil.copy(ROOT / "examples" / "chain.yaml", topology)
    _edit_topology(topology, lambda app: app["args"]["agents"][1]["engine"].__setitem__("trace", "./trace.jsonl"))
    with pytest.raises(TopologyError, match=r"agents\[1\] \(medium\)\.engine\.trace: './trace.jsonl' is relative"):
        k8s.render(topology)


def test_relative_adapter_path_names_the_field(tmp_path):
    topology = tmp_path / "t.yaml"
    shutil.copy(ROOT / "examples" / "chain.yaml", topology)
    engine = {"type": "vllm", "model": "smollm2-135m-instruct", "gate_lora": {"name": "gate", "path": "./gate"}}
    _edit_topology(topology, lambda app: app["args"]["agents"][1].__setitem__("engine", engine))
    with pytest.raises(TopologyError, match=r"agents\[1\] \(medium\)\.engine\.gate_lora\.path: './gate' is relative"):
        k8s.render(topology)


def test_a_misspelt_serve_key_stops_the_render(tmp_path):
    overlay = _copy_overlay(tmp_path)
    _edit_topology(overlay / "topology.yaml", lambda app: app.__setitem__("deployments", [{"name": "qwen", "num_replica": 2}]))
    with pytest.raises(TopologyError, match="unknown key 'num_replica'.*did you mean 'num_replicas'"):
        k8s.render(overlay / "topology.yaml")


def test_topic_resource_names_are_dns_names_and_never_collide():
    assert k8s.resource_name("chain.agent.small") == "chain.agent.small"
    odd = [k8s.resource_name(t) for t in ("Chain.agent.Big_One", "chain.agent.big-one", "chain.agent.big_one")]
    assert len(set(odd)) == 3
    for name in odd:
        assert name == name.lower() and "_" not in name and len(name) <= 253


def test_each_principal_gets_a_kafka_user_with_only_its_own_topics(tmp_path):
    topology = tmp_path / "t.yaml"
    shutil.copy(K8S / "overlays" / "dev" / "topology.yaml", topology)
    _edit_topology(topology, lambda app: app["args"]["agents"][1].__setitem__("kafka_credentials", {"sasl_username": "agent-qwen", "sasl_password_file": "/etc/q"}))
    users = {u["metadata"]["name"]: u for u in yaml.safe_load_all(k8s.render(topology).files[k8s.USERS_FILE])}
    assert sorted(users) == ["agent-qwen", "disrouter-agents", "disrouter-client"]

    def grants(user, op):
        return {a["resource"]["name"] for a in users[user]["spec"]["authorization"]["acls"] if op in a["operations"]}

    assert grants("agent-qwen", "Read") == {"disrouter.agent.qwen"}  # topic and consumer group
    assert grants("disrouter-agents", "Read") == {"disrouter.ingress", "disrouter.agent.smollm2"}
    assert "disrouter.agent.qwen" in grants("disrouter-agents", "Write")  # smollm2 hands off to qwen
    assert grants("disrouter-client", "Write") == {"disrouter.ingress"}
    assert grants("disrouter-client", "Read") == {"disrouter.answers", "disrouter.stream", "disrouter-client"}
    assert "disrouter.stream" in grants("agent-qwen", "Write")  # the answering agent streams its text


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "disrouter.cli", "render", "k8s", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_check_fails_on_a_stale_overlay_and_render_fixes_it(tmp_path, kubectl):
    overlay = _copy_overlay(tmp_path)
    topology = overlay / "topology.yaml"
    kube = ["--kubectl", kubectl[0]]
    ok = _cli(str(topology), "--overlay", str(overlay), "--check", *kube, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "manifests valid" in ok.stdout

    _edit_topology(topology, lambda app: app.__setitem__("deployments", [{"name": "qwen", "num_replicas": 3}]))
    stale = _cli(str(topology), "--overlay", str(overlay), "--check", *kube, cwd=tmp_path)
    assert stale.returncode == 1
    assert "serve-config.yaml, kafka-topics.yaml differ from a fresh render" in stale.stderr

    fixed = _cli(str(topology), "--overlay", str(overlay), *kube, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    topics = {t["spec"]["topicName"]: t for t in yaml.safe_load_all((overlay / k8s.TOPICS_FILE).read_text())}
    assert topics["disrouter.agent.qwen"]["spec"]["partitions"] == 3
    assert _cli(str(topology), "--overlay", str(overlay), "--check", *kube, cwd=tmp_path).returncode == 0
