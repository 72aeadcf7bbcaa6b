"""What DiSRouter asks of its Kubernetes manifests beyond their schemas, checked on the built
output of an overlay (`disrouter render k8s --check`):

- every container has CPU and memory requests and limits, runs as non-root and cannot gain
  privileges; Strimzi's pods (node pools, entity operator) have their resources too;
- secrets only by reference: no Secret with data, no literal value in a secret-named variable;
- the Ray head runs no GPU work, and a GPU count is the same in requests, limits and Ray's view;
- the topology inside serveConfigV2 fits the cluster it is shipped with: every file it reads
  is mounted in every worker, every agent fits some worker group, its Kafka address names the
  Kafka resource and a listener that speaks its protocol, its principals are KafkaUsers, every
  topic is a KafkaTopic with partitions for the agent's replicas, and rayVersion is the Ray
  this package runs on.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from disrouter.topology.compile import actor_options
from disrouter.topology.k8s import replica_counts, topic_plan
from disrouter.topology.load import BUILDER, engine_paths, parse_topology
from disrouter.topology.schema import Topology

_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|CREDENTIAL|PRIVATE_KEY", re.I)
GPU = "nvidia.com/gpu"


def _pod_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(where, pod spec, Ray group) for every pod template of a manifest."""
    spec = doc.get("spec") or {}
    if doc["kind"] == "RayService":
        cluster = spec.get("rayClusterConfig") or {}
        head = cluster.get("headGroupSpec") or {}
        out = [("spec.rayClusterConfig.headGroupSpec", (head.get("template") or {}).get("spec") or {}, head)]
        for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
            out.append((f"spec.rayClusterConfig.workerGroupSpecs[{i}] ({group.get('groupName')})", (group.get("template") or {}).get("spec") or {}, group))
        return out
    if doc["kind"] == "Pod":
        return [("spec", spec, None)]
    template = (spec.get("template") or {}).get("spec")
    return [("spec.template.spec", template, None)] if isinstance(template, dict) else []


def _resources(where: str, resources: Any) -> list[str]:
    resources = resources or {}
    return [
        f"{where}.resources.{kind}.{name}: missing (every container has requests and limits)"
        for kind in ("requests", "limits")
        for name in ("cpu", "memory")
        if name not in (resources.get(kind) or {})
    ]


def _containers(where: str, pod: dict[str, Any]) -> list[str]:
    problems = []
    pod_ctx = pod.get("securityContext") or {}
    for key in ("containers", "initContainers"):
        for i, c in enumerate(pod.get(key) or []):
            at = f"{where}.{key}[{i}] ({c.get('name')})"
            problems += _resources(at, c.get("resources"))
            ctx = c.get("securityContext") or {}
            if not (ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True and ctx.get("runAsUser", pod_ctx.get("runAsUser")) != 0):
                problems.append(f"{at}: must run as non-root (securityContext.runAsNonRoot: true)")
            if ctx.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}.securityContext.allowPrivilegeEscalation: must be false")
            for env in c.get("env") or []:
                if "value" in env and _SECRET_NAME.search(str(env.get("name"))):
                    problems.append(f"{at}.env.{env.get('name')}: a secret-like variable with an inline value: use valueFrom.secretKeyRef")
            requests, limits = ((c.get("resources") or {}).get(k) or {} for k in ("requests", "limits"))
            if str(requests.get(GPU, limits.get(GPU))) != str(limits.get(GPU, requests.get(GPU))):
                problems.append(f"{at}.resources: {GPU} requests and limits must be equal")
    return problems


def _gpus(pod: dict[str, Any]) -> float:
    return sum(float(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0)) for c in pod.get("containers") or [])


def _ray_resources(group: dict[str, Any]) -> dict[str, float]:
    raw = (group.get("rayStartParams") or {}).get("resources")
    if not raw:
        return {}
    # KubeRay passes the value to `ray start --resources`, quoted for the shell: '"{…}"'.
    return {k: float(v) for k, v in json.loads(raw.strip().strip("'\"").replace('\\"', '"')).items()}


def _cpus(pod: dict[str, Any]) -> float:
    total = 0.0
    for c in pod.get("containers") or []:
        cpu = str(((c.get("resources") or {}).get("limits") or {}).get("cpu", "0"))
        total += float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return total


def _ray_service(doc: dict[str, Any]) -> list[str]:
    problems = []
    cluster = (doc.get("spec") or {}).get("rayClusterConfig") or {}
    head = cluster.get("headGroupSpec") or {}
    if str((head.get("rayStartParams") or {}).get("num-gpus")) != "0" or _gpus((head.get("template") or {}).get("spec") or {}):
        problems.append("spec.rayClusterConfig.headGroupSpec: the head runs no GPU work (rayStartParams num-gpus: \"0\", no nvidia.com/gpu)")
    auto = cluster.get("autoscalerOptions")
    if cluster.get("enableInTreeAutoscaling"):
        problems += _resources("spec.rayClusterConfig.autoscalerOptions", (auto or {}).get("resources"))
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        pod = (group.get("template") or {}).get("spec") or {}
        ray_gpus = (group.get("rayStartParams") or {}).get("num-gpus")
        if ray_gpus is not None and float(ray_gpus) != _gpus(pod):
            problems.append(f"spec.rayClusterConfig.workerGroupSpecs[{i}] ({group.get('groupName')}).rayStartParams.num-gpus: {ray_gpus} but the pod has {_gpus(pod):g} {GPU}")
    return problems


def _strimzi(doc: dict[str, Any]) -> list[str]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "KafkaNodePool":
        return _resources("spec", spec.get("resources"))
    if doc["kind"] == "Kafka":
        problems = []
        eo = spec.get("entityOperator") or {}
        for name in ("topicOperator", "userOperator"):
            if name in eo:
                problems += _resources(f"spec.entityOperator.{name}", eo[name].get("resources"))
        for name in ("cruiseControl", "kafkaExporter"):
            if name in spec:
                problems += _resources(f"spec.{name}", spec[name].get("resources"))
        return problems
    return []


def _topologies(doc: dict[str, Any]) -> list[tuple[dict[str, Any], Topology]]:
    config = yaml.safe_load((doc.get("spec") or {}).get("serveConfigV2") or "") or {}
    return [(app, parse_topology(dict(app.get("args") or {}))) for app in config.get("applications") or [] if app.get("import_path") == BUILDER]


def _files(topology: Topology) -> dict[str, str]:
    files = {"trust.key_file": topology.trust.key_file, "kafka.ssl_cafile": topology.kafka.ssl_cafile}
    creds = [("kafka.credentials", topology.kafka.credentials)] + [(f"agents ({a.name}).kafka_credentials", a.kafka_credentials) for a in topology.agents]
    for where, c in creds:
        if c is not None:
            for key in ("sasl_password_file", "ssl_certfile", "ssl_keyfile"):
                files[f"{where}.{key}"] = getattr(c, key)
    return {k: v for k, v in files.items() if v}


def _fits(topology: Topology, docs: list[dict[str, Any]], rs: dict[str, Any]) -> list[str]:
    """The topology against the cluster it ships with."""
    import ray

    problems = []
    cluster = (rs.get("spec") or {}).get("rayClusterConfig") or {}
    if cluster.get("rayVersion") != ray.__version__:
        problems.append(f"spec.rayClusterConfig.rayVersion: {cluster.get('rayVersion')!r}, but this package runs on Ray {ray.__version__} (and so does its image)")
    groups = cluster.get("workerGroupSpecs") or []
    for i, group in enumerate(groups):
        pod = (group.get("template") or {}).get("spec") or {}
        for c in pod.get("containers") or []:
            mounts = [m.get("mountPath", "").rstrip("/") + "/" for m in c.get("volumeMounts") or []]
            for field, path in _files(topology).items():
                if path.startswith("/") and not any(path.startswith(m) for m in mounts):
                    problems.append(f"workerGroupSpecs[{i}] ({group.get('groupName')}): the topology's {field} {path} is not under any volumeMount of container {c.get('name')}")
    for agent in topology.agents:
        opts = actor_options(agent)  # what Serve asks Ray for, defaults included
        need_gpu = float(opts.get("num_gpus") or 0)
        need_cpu = float(opts.get("num_cpus") or 0)
        need = {k: float(v) for k, v in (opts.get("resources") or {}).items()}
        fits = [
            g for g in groups
            if _gpus((g.get("template") or {}).get("spec") or {}) >= need_gpu
            and _cpus((g.get("template") or {}).get("spec") or {}) >= need_cpu
            and all(_ray_resources(g).get(k, 0) >= v for k, v in need.items())
        ]
        if not fits:
            problems.append(f"agent {agent.name!r} (num_gpus {need_gpu:g}, num_cpus {need_cpu:g}, resources {need}) fits no worker group")
            continue
        # A model or adapter on a mounted volume must be mounted where the agent can run.
        for field, path in _engine_files(agent.engine).items():
            if not any(_mounted(g, path) for g in fits):
                names = ", ".join(str(g.get("groupName")) for g in fits)
                problems.append(f"agent {agent.name!r}: engine.{field} {path} is on no volume mounted in the worker groups it fits ({names})")
    return problems


def _engine_files(engine: dict[str, Any]) -> dict[str, str]:
    """Absolute paths an engine reads (Hugging Face ids and pkg: paths are not files here)."""
    return {k: v for k, v in engine_paths(engine).items() if isinstance(v, str) and v.startswith("/")}


def _mounted(group: dict[str, Any], path: str) -> bool:
    containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or []
    return bool(containers) and all(
        any(path.startswith(m.get("mountPath", "").rstrip("/") + "/") for m in c.get("volumeMounts") or []) for c in containers
    )


def _kafka(topology: Topology, app: dict[str, Any], docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    kafkas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Kafka"}
    for server in topology.kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        name = host.split(".")[0].removesuffix("-kafka-bootstrap")
        kafka = kafkas.get(name)
        if kafka is None or not host.split(".")[0].endswith("-kafka-bootstrap"):
            problems.append(f"kafka.bootstrap_servers: {server!r} is not the bootstrap service of a Kafka here ({', '.join(f'{k}-kafka-bootstrap' for k in kafkas) or 'none'})")
            continue
        listeners = {str(li.get("port")): li for li in kafka["spec"]["kafka"].get("listeners") or []}
        listener = listeners.get(port)
        if listener is None:
            problems.append(f"kafka.bootstrap_servers: Kafka {name!r} has no listener on port {port} ({', '.join(listeners)})")
            continue
        tls = topology.kafka.security_protocol in ("SSL", "SASL_SSL")
        if bool(listener.get("tls")) != tls:
            problems.append(f"kafka.security_protocol: {topology.kafka.security_protocol} but listener {listener.get('name')!r} has tls: {listener.get('tls')}")
        auth = (listener.get("authentication") or {}).get("type")
        if auth == "scram-sha-512" and topology.kafka.sasl_mechanism != "SCRAM-SHA-512":
            problems.append(f"kafka.sasl_mechanism: listener {listener.get('name')!r} authenticates with SCRAM-SHA-512")
    users = {d["metadata"]["name"] for d in docs if d["kind"] == "KafkaUser"}
    named = {c.sasl_username for c in [topology.kafka.credentials, *(a.kafka_credentials for a in topology.agents)] if c and c.sasl_username}
    problems += [f"kafka credentials: principal {u!r} is not a KafkaUser here" for u in sorted(named - users)]
    brokers = sum(
        int((d.get("spec") or {}).get("replicas") or 0) for d in docs
        if d["kind"] == "KafkaNodePool" and "broker" in ((d.get("spec") or {}).get("roles") or [])
    )
    if topology.kafka.replication_factor > brokers:
        problems.append(f"kafka.replication_factor: {topology.kafka.replication_factor}, but the KafkaNodePools have {brokers} broker(s): its topics could never be created")
    topics = {(d.get("spec") or {}).get("topicName") or d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaTopic"}
    for plan in topic_plan(topology, replica_counts(app, topology)):
        topic = topics.get(plan.name)
        if topic is None:
            problems.append(f"topic {plan.name!r} has no KafkaTopic (render the topology into the overlay)")
        elif int((topic.get("spec") or {}).get("partitions") or 0) < plan.partitions:
            problems.append(f"KafkaTopic for {plan.name!r}: {topic['spec'].get('partitions')} partitions, fewer than the {plan.partitions} its consumers' replicas need")
    return problems


def check_rules(docs: list[dict[str, Any]]) -> list[str]:
    """Every rule a built overlay breaks, as '<Kind>/<name>: <where>: <what>'. For manifests
    that passed `manifests.validate_documents`: the rules trust the types it checked."""
    problems = []
    for doc in docs:
        ident = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        found: list[str] = []
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            found.append("a Secret with data in the manifests: create it in the cluster and reference it by name")
        for where, pod, _ in _pod_specs(doc):
            found += _containers(where, pod)
        if doc.get("kind") == "RayService":
            found += _ray_service(doc)
            for app, topology in _topologies(doc):
                found += [f"serveConfigV2 ({app.get('name')}): {p}" for p in _fits(topology, docs, doc) + _kafka(topology, app, docs)]
        if str(doc.get("apiVersion", "")).startswith("kafka.strimzi.io/"):
            found += _strimzi(doc)
        problems += [f"{ident}: {p}" for p in found]
    return problems
