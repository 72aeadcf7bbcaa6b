"""The strict Serve config check: Ray's schema, with the unknown keys Ray would silently drop."""

from __future__ import annotations

import pytest

from disrouter.topology.load import read_yaml
from disrouter.topology.serve_schema import check_serve_config
from tests.k8s.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_topology_is_a_strictly_valid_serve_config(path):
    assert check_serve_config(read_yaml(path)) == []


def _chain() -> dict:
    return read_yaml(ROOT / "examples" / "chain.yaml")


def test_ray_itself_accepts_a_misspelt_key():
    # Why the strict check exists: Ray's own model takes `num_replica` without a word.
    from ray.serve.schema import ServeDeploySchema

    config = _chain()
    config["applications"][0]["deployments"] = [{"name": "small", "num_replica": 2}]
    ServeDeploySchema.model_validate(config)


def test_misspelt_keys_are_named_at_every_level():
    config = _chain()
    config["http_options"] = {"prot": 8000}
    config["applications"][0]["deployments"] = [{"name": "small", "num_replica": 2, "autoscaling_config": {"min_replica": 1}}]
    config["applications"][0]["args"]["agents"][0]["ray_actor_options"] = {"num_cpu": 1}
    config["applications"][0]["rout_prefix"] = "/x"
    assert check_serve_config(config) == [
        "http_options: unknown key 'prot' in HTTPOptionsSchema (did you mean 'port'?)",
        "applications[0].deployments[0]: unknown key 'num_replica' in DeploymentSchema (did you mean 'num_replicas'?)",
        "applications[0].deployments[0].autoscaling_config: unknown key 'min_replica' in AutoscalingConfig (did you mean 'min_replicas'?)",
        "applications[0]: unknown key 'rout_prefix' in ServeApplicationSchema (did you mean 'route_prefix'?)",
        "applications[0].args.agents[0] (small).ray_actor_options: unknown key 'num_cpu' in RayActorOptionsSchema (did you mean 'num_cpus'?)",
    ]


def test_wrong_types_are_named():
    config = _chain()
    config["applications"][0]["deployments"] = [{"name": "small", "max_ongoing_requests": "many"}]
    config["applications"][0]["args"]["agents"][1]["cost"] = "cheap"
    problems = check_serve_config(config)
    assert len(problems) == 2
    assert problems[0].startswith("applications[0].deployments[0].max_ongoing_requests: Input should be a valid integer")
    assert problems[1] == "applications[0].args.agents[1] (medium).cost: Expected `float`, got `str`"


def test_not_a_mapping():
    assert check_serve_config(["applications"]) == ["<root>: a Serve config is a mapping with `applications:`, not list"]
