"""Fixtures for the Kubernetes checks: the kubectl that builds overlays, and built overlays.

kubectl comes from scripts/setup.sh (.tools/bin, pinned) or $DISROUTER_KUBECTL. Without it, and
without kubernetes-validate, these tests skip on a developer's machine and fail in CI
(DISROUTER_REQUIRE_LLM=1, tests/requirements.py): a broken setup is never green.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.requirements import require_module, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


@pytest.fixture(scope="session")
def kubectl() -> list[str]:
    for candidate in (os.environ.get("DISROUTER_KUBECTL"), str(ROOT / ".tools" / "bin" / "kubectl")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return [candidate, "kustomize"]
    skip_or_fail("no kubectl: run scripts/setup.sh (it installs one into .tools/bin) or set DISROUTER_KUBECTL")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session", autouse=True)
def _validators() -> None:
    require_module("kubernetes_validate", "pip install -e '.[k8s]'")
    require_module("jsonschema", "pip install -e '.[k8s]'")


@pytest.fixture(scope="session")
def built(kubectl: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every overlay (and the base), built once by kustomize."""
    from disrouter.topology.manifests import kustomize_build

    out = {name: kustomize_build(K8S / "overlays" / name, kubectl) for name in OVERLAYS}
    out["base"] = kustomize_build(K8S / "base", kubectl)
    return out


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]
