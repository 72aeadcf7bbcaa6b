"""Every overlay builds and validates offline; broken manifests fail with a message naming the fault."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from disrouter.topology.k8s_rules import check_rules
from disrouter.topology.manifests import crd_schemas, json_schema, kustomize_build, validate_documents
from tests.k8s.conftest import K8S, OVERLAYS, ROOT, of_kind


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = of_kind(docs, kind)
    return copy.deepcopy(doc)


def _problems(*docs: dict[str, Any]) -> list[str]:
    return validate_documents(list(docs))


def test_there_are_dev_and_h100_overlays():
    assert {"dev", "h100"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_every_manifest_is_valid(overlay, built):
    docs = built[overlay]
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("RayService", "Kafka", "KafkaNodePool", "Namespace"):
        assert kinds.count(kind) == 1, kind
    assert kinds.count("KafkaTopic") >= 5 and kinds.count("KafkaUser") == 2
    assert validate_documents(docs) == []
    assert check_rules(docs) == []


def test_the_client_pod_is_valid():
    docs = list(yaml.safe_load_all((K8S / "tools" / "kafka-client.yaml").read_text()))
    assert validate_documents(docs) == [] and check_rules(docs) == []


# --- what lives in the base and what in the overlays ---------------------------------------


def _containers(service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["containers"]]


def test_the_base_leaves_hardware_and_images_to_the_overlays(built):
    service = _one(built["base"], "RayService")
    text = yaml.safe_dump(built["base"])
    assert "nvidia.com/gpu" not in text and "nodeSelector" not in text and "tolerations" not in text
    assert {c["image"] for c in _containers(service)} == {"disrouter"}  # a placeholder name
    assert service["spec"]["serveConfigV2"] == ""  # the topology comes from the overlay


def test_h100_has_one_worker_group_per_gpu_shape_and_tensor_parallel_for_the_large_agent(built):
    service = _one(built["h100"], "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    gpus = {}
    for group in cluster["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits.get("nvidia.com/gpu") == requests.get("nvidia.com/gpu")
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        if "nvidia.com/gpu" in limits:
            gpus[group["groupName"]] = limits["nvidia.com/gpu"]
            assert group["template"]["spec"]["nodeSelector"] and group["template"]["spec"]["tolerations"]
    assert sorted(gpus.values()) == [1, 2]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    large = [a for a in config["applications"][0]["args"]["agents"] if a["engine"].get("tensor_parallel_size")]
    assert [(a["engine"]["tensor_parallel_size"], a["ray_actor_options"]["num_gpus"]) for a in large] == [(2, 2)]
    assert {c["image"] for c in _containers(service)} == {"ghcr.io/your-org/disrouter:0.1.0-gpu"}


def test_dev_runs_the_cpu_image_without_gpus(built):
    service = _one(built["dev"], "RayService")
    assert "nvidia.com/gpu" not in yaml.safe_dump(service)
    assert {c["image"] for c in _containers(service)} == {"ghcr.io/your-org/disrouter:0.1.0-cpu"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_only_referenced(overlay, built):
    assert of_kind(built[overlay], "Secret") == []
    text = yaml.safe_dump(built[overlay])
    for name in ("disrouter-trust", "disrouter-agents", "disrouter-cluster-ca-cert", "hf-token"):
        assert name in text


# --- negative: each fault is named -------------------------------------------------------------


def test_a_misspelt_custom_resource_field_is_named(built):
    service = _one(built["dev"], "RayService")
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3
    (problem,) = _problems(service)
    assert problem.startswith("RayService/disrouter: spec.rayClusterConfig.workerGroupSpecs[0]:") and "'maxReplica' was unexpected" in problem


def test_a_misspelt_builtin_field_is_named(built):
    namespace = _one(built["dev"], "Namespace")
    namespace["metadata"]["lables"] = {"a": "b"}
    (problem,) = _problems(namespace)
    assert problem.startswith("Namespace/disrouter: metadata:") and "'lables' was unexpected" in problem


def test_a_wrong_type_is_named(built):
    service = _one(built["h100"], "RayService")
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["maxReplicas"] = "ten"
    topic = _one([d for d in built["dev"] if d["kind"] == "KafkaTopic"][:1], "KafkaTopic")
    topic["spec"]["partitions"] = "2"
    assert _problems(service) == ["RayService/disrouter: spec.rayClusterConfig.workerGroupSpecs[1].maxReplicas: 'ten' is not of type 'integer'"]
    assert _problems(topic) == [f"KafkaTopic/{topic['metadata']['name']}: spec.partitions: '2' is not of type 'integer'"]


@pytest.mark.parametrize(
    ("kind", "api", "expected"),
    [
        ("Kafka", "kafka.strimzi.io/v1beta2", "apiVersion: kafka.strimzi.io/v1beta2 Kafka is not a kind the targeted CRDs serve; the CRDs this project targets serve kafka.strimzi.io/v1 Kafka"),
        ("RayService", "ray.io/v1alpha1", "apiVersion: ray.io/v1alpha1 RayService is not a kind the targeted CRDs serve"),
        ("Namespace", "v2", "apiVersion: v2 Namespace does not exist in Kubernetes 1.33 (nor is it a custom resource this project ships a schema for)"),
    ],
)
def test_a_wrong_api_version_is_named(built, kind, api, expected):
    doc = _one(built["dev"], kind)
    doc["apiVersion"] = api
    (problem,) = _problems(doc)
    assert expected in problem


def test_a_misspelt_serve_config_key_inside_the_rayservice_is_named(built):
    service = _one(built["dev"], "RayService")
    service["spec"]["serveConfigV2"] = service["spec"]["serveConfigV2"].replace("num_replicas", "num_replica", 1)
    (problem,) = _problems(service)
    assert problem == "RayService/disrouter: spec.serveConfigV2: applications[0].deployments[0]: unknown key 'num_replica' in DeploymentSchema (did you mean 'num_replicas'?)"


def test_an_empty_serve_config_is_named(built):
    assert _problems(_one(built["base"], "RayService")) == ["RayService/disrouter: spec.serveConfigV2: empty: render the topology into the overlay (`disrouter render k8s`)"]


BROKEN = {
    "misspelt field": (
        "overlays/dev/kustomization.yaml", "path: /spec/rayClusterConfig/workerGroupSpecs/0/maxReplicas", "path: /spec/rayClusterConfig/workerGroupSpecs/0/maxReplica",
        "error: RayService/disrouter: spec.rayClusterConfig.workerGroupSpecs[0]: Additional properties are not allowed ('maxReplica' was unexpected)",
    ),
    "wrong type": (
        "base/kafka.yaml", "  replicas: 1          # overlays set the broker count", "  replicas: one",
        "error: KafkaNodePool/dual-role: spec.replicas: 'one' is not of type 'integer'",
    ),
    "wrong apiVersion": (
        "base/kafka.yaml", "apiVersion: kafka.strimzi.io/v1\nkind: Kafka\n", "apiVersion: kafka.strimzi.io/v1beta2\nkind: Kafka\n",
        "error: Kafka/disrouter: apiVersion: kafka.strimzi.io/v1beta2 Kafka is not a kind the targeted CRDs serve; the CRDs this project targets serve kafka.strimzi.io/v1 Kafka",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_overlay_fails_the_cli_check_naming_the_fault(tmp_path, kubectl, case):
    shutil.copytree(K8S / "base", tmp_path / "k8s" / "base")
    overlay = tmp_path / "k8s" / "overlays" / "dev"
    shutil.copytree(K8S / "overlays" / "dev", overlay)
    file, old, new, expected = BROKEN[case]
    target = tmp_path / "k8s" / file
    assert old in target.read_text()
    target.write_text(target.read_text().replace(old, new))
    done = subprocess.run(
        [sys.executable, "-m", "disrouter.cli", "render", "k8s", str(overlay / "topology.yaml"), "--overlay", str(overlay), "--check", "--kubectl", kubectl[0]],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    assert expected in done.stderr.splitlines()


# --- the structural schema, read the way the API server reads it ------------------------------


def test_int_or_string_nullable_preserve_unknown_and_defaults():
    schema = json_schema({
        "type": "object",
        "required": ["a", "b"],
        "properties": {
            "a": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "b": {"type": "integer", "default": 0},
            "c": {"type": "string", "nullable": True},
            "d": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "e": {"type": "object", "properties": {"f": {"type": "string"}}},
        },
    })
    import jsonschema

    ok = jsonschema.Draft202012Validator(schema)
    assert ok.is_valid({"a": 1}) and ok.is_valid({"a": "50%"})  # b defaults, so it may be absent
    assert not ok.is_valid({"a": [1]}) and not ok.is_valid({})
    assert ok.is_valid({"a": 1, "c": None, "d": {"anything": {"goes": 1}}})
    assert not ok.is_valid({"a": 1, "e": {"g": "x"}})


def test_real_crd_details_behave(built):
    kafka = _one(built["h100"], "Kafka")
    kafka["spec"]["kafka"]["config"]["any.broker.setting"] = "x"  # preserve-unknown-fields
    service = _one(built["dev"], "RayService")
    group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    del group["minReplicas"]  # required, but defaulted to 0 by the server
    group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 6  # int-or-string quantity
    assert _problems(kafka, service) == []
    assert set(crd_schemas()) == {
        ("ray.io/v1", "RayService"), ("ray.io/v1", "RayCluster"), ("kafka.strimzi.io/v1", "Kafka"),
        ("kafka.strimzi.io/v1", "KafkaNodePool"), ("kafka.strimzi.io/v1", "KafkaTopic"), ("kafka.strimzi.io/v1", "KafkaUser"),
    }


# --- the project's rules -----------------------------------------------------------------------


def _rules(docs: list[dict[str, Any]], change) -> list[str]:
    docs = copy.deepcopy(docs)
    change({d["kind"]: d for d in docs if d["kind"] != "KafkaTopic" and d["kind"] != "KafkaUser"})
    return check_rules(docs)


def test_rules_catch_a_container_without_limits(built):
    def drop(by_kind):
        del by_kind["RayService"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert _rules(built["h100"], drop) == [
        "RayService/disrouter: spec.rayClusterConfig.workerGroupSpecs[1] (h100x1).containers[0] (ray-worker).resources.limits.memory: missing (every container has requests and limits)"
    ]


def test_rules_catch_root_gpu_on_the_head_and_inline_secrets(built):
    def break_it(by_kind):
        cluster = by_kind["RayService"]["spec"]["rayClusterConfig"]
        head = cluster["headGroupSpec"]
        head["rayStartParams"]["num-gpus"] = "1"
        head["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
        head["template"]["spec"]["containers"][0]["env"] = [{"name": "HF_TOKEN", "value": "hf_abc"}]
    problems = "\n".join(_rules(built["h100"], break_it))
    assert "the head runs no GPU work" in problems
    assert "headGroupSpec.containers[0] (ray-head): must run as non-root" in problems
    assert "env.HF_TOKEN: a secret-like variable with an inline value" in problems


def test_rules_check_the_topology_against_its_cluster(built):
    def break_it(by_kind):
        service = by_kind["RayService"]
        config = yaml.safe_load(service["spec"]["serveConfigV2"])
        args = config["applications"][0]["args"]
        args["agents"][-1]["ray_actor_options"]["num_gpus"] = 4   # no group has four GPUs
        args["trust"]["key_file"] = "/run/secrets/trust/key"        # not mounted anywhere
        args["kafka"]["bootstrap_servers"] = "my-kafka-kafka-bootstrap:9092"
        service["spec"]["serveConfigV2"] = yaml.safe_dump(config)
        service["spec"]["rayClusterConfig"]["rayVersion"] = "2.9.0"
    problems = "\n".join(_rules(built["h100"], break_it))
    assert "agent 'qwen-14b' (num_gpus 4, num_cpus 8, resources {}) fits no worker group" in problems
    assert "the topology's trust.key_file /run/secrets/trust/key is not under any volumeMount" in problems
    assert "'my-kafka-kafka-bootstrap:9092' is not the bootstrap service of a Kafka here (disrouter-kafka-bootstrap)" in problems
    assert "rayVersion: '2.9.0', but this package runs on Ray" in problems


def test_a_model_on_a_volume_must_be_mounted_where_its_agent_runs(built):
    docs = copy.deepcopy(built["h100"])
    (service,) = of_kind(docs, "RayService")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    config["applications"][0]["args"]["agents"][-1]["engine"]["model"] = "/models/qwen2.5-14b-instruct"
    config["applications"][0]["args"]["agents"][-1]["engine"]["gate_lora"] = {"name": "gate", "path": "/models/adapters/gate"}
    service["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    assert check_rules(docs) == [
        "RayService/disrouter: serveConfigV2 (disrouter): agent 'qwen-14b': engine.model /models/qwen2.5-14b-instruct is on no volume mounted in the worker groups it fits (h100x2)",
        "RayService/disrouter: serveConfigV2 (disrouter): agent 'qwen-14b': engine.gate_lora.path /models/adapters/gate is on no volume mounted in the worker groups it fits (h100x2)"
    ]
    # The README's patch: a read-only PVC at /models in the two-GPU group.
    (group,) = [g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "h100x2"]
    group["template"]["spec"]["volumes"].append({"name": "models", "persistentVolumeClaim": {"claimName": "disrouter-models", "readOnly": True}})
    group["template"]["spec"]["containers"][0]["volumeMounts"].append({"name": "models", "mountPath": "/models", "readOnly": True})
    assert check_rules(docs) == [] and validate_documents(docs) == []


def test_rules_catch_a_topic_too_small_for_its_replicas(built):
    docs = copy.deepcopy(built["dev"])
    for topic in of_kind(docs, "KafkaTopic"):
        if topic["spec"]["topicName"] == "disrouter.agent.qwen":
            topic["spec"]["partitions"] = 1
    assert check_rules(docs) == ["RayService/disrouter: serveConfigV2 (disrouter): KafkaTopic for 'disrouter.agent.qwen': 1 partitions, fewer than the 2 its consumers' replicas need"]


def test_rules_catch_more_replicas_than_brokers(built):
    docs = copy.deepcopy(built["h100"])
    (pool,) = of_kind(docs, "KafkaNodePool")
    pool["spec"]["replicas"] = 1
    assert check_rules(docs) == ["RayService/disrouter: serveConfigV2 (disrouter): kafka.replication_factor: 3, but the KafkaNodePools have 1 broker(s): its topics could never be created"]


def test_kustomize_errors_are_reported(tmp_path, kubectl):
    from disrouter.topology.manifests import KustomizeError

    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(KustomizeError, match="missing.yaml"):
        kustomize_build(tmp_path, kubectl)


def test_the_crd_schemas_are_the_shared_ones_with_their_notice():
    crds = ROOT / "topology" / "crds"
    notice = (crds / "NOTICE").read_text()
    for path in crds.glob("*.json"):
        assert path.name in notice
    assert "Apache License, Version 2.0" in notice and "strimzi-kafka-operator 1.2.0" in notice and "kuberay v1.7.0" in notice
    assert Path(crds / "ray.io_v1_RayService.json").stat().st_size > 100_000


# --- observability ------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_provisions_the_grafana_dashboard_and_prometheus_finds_the_nodes(overlay, built):
    docs = built[overlay]
    (dashboard,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "disrouter-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"  # the Grafana chart's sidecar label
    assert dashboard["data"]["disrouter.json"] == (K8S / "base" / "grafana" / "disrouter.json").read_text()
    service = _one(docs, "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    for template in [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]:
        annotations = template["metadata"]["annotations"]
        assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "8080")
