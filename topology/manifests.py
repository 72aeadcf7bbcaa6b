"""Offline validation of Kubernetes manifests, as close to the API server as no cluster allows.

- Built-in kinds (Secret, Pod, …) against Kubernetes' own OpenAPI schemas, strictly (unknown
  fields are errors, as with `kubectl apply --validate=strict`), through `kubernetes-validate`.
- Custom resources (RayService, Kafka, KafkaNodePool, KafkaTopic, KafkaUser) against the CRD
  schemas shipped in `crds/` (KubeRay 1.7.0, Strimzi 1.2.0; see crds/NOTICE). Those are
  Kubernetes *structural* schemas; `json_schema` turns them into JSON Schema the way the API
  server reads them: fields a schema does not declare are refused unless it preserves unknown
  fields, `nullable` admits null, int-or-string admits both, and a required field that has a
  default counts as present (the server defaults before it validates). CEL rules
  (`x-kubernetes-validations`) are not evaluated.
- The Serve config embedded in a RayService (`serveConfigV2`) against Ray Serve's schema with
  unknown keys refused, and DiSRouter's topology inside it (`serve_schema.py`).

Every problem names the resource and the field path.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

CRD_GROUPS = ("ray.io", "kafka.strimzi.io")
DEFAULT_KUBE_VERSION = "1.33"  # the kubectl scripts/setup.sh installs
# ObjectMeta fields a manifest may set (the server owns the rest: uid, resourceVersion, …).
_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": False,
    "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
}


class KustomizeError(RuntimeError):
    """kustomize could not build an overlay, or no kubectl/kustomize binary was found."""


def json_schema(node: Any) -> Any:
    """A Kubernetes structural schema → the JSON Schema that accepts what the API server would."""
    if isinstance(node, list):
        return [json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if k not in ("x-kubernetes-validations", "nullable")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    props = node.get("properties")
    if isinstance(props, dict):
        # Defaulted fields are filled in before validation, so they can never be missing.
        required = [r for r in node.get("required", []) if "default" not in props.get(r, {})]
        if required:
            out["required"] = required
        else:
            out.pop("required", None)
        typed_object = node.get("type") == "object"
        if typed_object and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → JSON Schema, for every CRD schema in crds/."""
    schemas = {}
    for entry in resources.files("disrouter.topology").joinpath("crds").iterdir():
        if not entry.name.endswith(".json"):
            continue
        group, version, kind = entry.name[: -len(".json")].split("_")
        schema = json_schema(json.loads(entry.read_text()))
        schema["properties"]["metadata"] = _METADATA
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
        schemas[(f"{group}/{version}", kind)] = schema
    return schemas


def _path(parts: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".") or "<root>"


def _identify(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return f"{doc.get('kind', '<no kind>')}/{meta.get('name', '<no name>')}"


def _custom(doc: dict[str, Any]) -> list[str]:
    import jsonschema

    api, kind = str(doc.get("apiVersion")), str(doc.get("kind"))
    schema = crd_schemas().get((api, kind))
    if schema is None:
        served = sorted(f"{a} {k}" for a, k in crd_schemas() if k == kind)
        hint = f"; the CRDs this project targets serve {', '.join(served)}" if served else ""
        return [f"apiVersion: {api} {kind} is not a kind the targeted CRDs serve{hint}"]
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{_path(e.absolute_path)}: {e.message}" for e in errors]


def _builtin(doc: dict[str, Any], kube_version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(copy.deepcopy(doc), kube_version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"apiVersion: {doc.get('apiVersion')} {doc.get('kind')} does not exist in Kubernetes {kube_version} (nor is it a custom resource this project ships a schema for)"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{_path(exc.path)}: {exc.message}"]
    return []


def _serve_config(doc: dict[str, Any]) -> list[str]:
    from disrouter.topology.serve_schema import check_serve_config

    text = (doc.get("spec") or {}).get("serveConfigV2")
    if not isinstance(text, str) or not text.strip():
        return ["spec.serveConfigV2: empty: render the topology into the overlay (`disrouter render k8s`)"]
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"spec.serveConfigV2: not valid YAML: {exc}"]
    return [f"spec.serveConfigV2: {p}" for p in check_serve_config(config)]


def validate_documents(docs: list[Any], kube_version: str = DEFAULT_KUBE_VERSION) -> list[str]:
    """Every problem of a list of manifests, each as '<Kind>/<name>: <field path>: <message>'."""
    problems = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            problems.append(f"document {i}: a manifest needs apiVersion and kind")
            continue
        group = str(doc["apiVersion"]).split("/")[0] if "/" in str(doc["apiVersion"]) else ""
        found = _custom(doc) if group in CRD_GROUPS else _builtin(doc, kube_version)
        if doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService" and not found:
            found = _serve_config(doc)
        problems += [f"{_identify(doc)}: {p}" for p in found]
    return problems


def find_kubectl(explicit: str | None = None) -> list[str]:
    """The command that builds a kustomization: `--kubectl`, $DISROUTER_KUBECTL, the kubectl
    scripts/setup.sh installs (.tools/bin), then kubectl or kustomize on PATH."""
    candidates = [explicit, os.environ.get("DISROUTER_KUBECTL")]
    candidates.append(str(Path.cwd() / ".tools" / "bin" / "kubectl"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return [candidate, "kustomize"] if Path(candidate).name != "kustomize" else [candidate, "build"]
    if explicit:
        raise KustomizeError(f"--kubectl {explicit}: not an executable file")
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise KustomizeError("no kubectl or kustomize found: run scripts/setup.sh (it installs kubectl into .tools/bin) or pass --kubectl")


def kustomize_build(overlay: str | Path, kubectl: list[str] | None = None) -> list[dict[str, Any]]:
    command = [*(kubectl or find_kubectl()), str(overlay)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KustomizeError(f"{' '.join(command)}: {exc}") from None
    if done.returncode != 0:
        raise KustomizeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]
