"""An engine's `env:` never rewrites a running process's environment behind another engine's back.

Under Serve the variables reach the replica as its runtime_env (Ray sets them before the process
starts); in-process (tests, benchmarks) they are set once, and a second engine wanting another
value for the same variable is refused instead of silently changing the first one's.
"""

from __future__ import annotations

import os

import pytest

from disrouter.actors.engines import vllm
from disrouter.actors.errors import EngineError
from disrouter.topology.compile import actor_options
from disrouter.topology.schema import AgentSpec


def test_engine_env_becomes_the_replica_runtime_env():
    spec = AgentSpec(name="a", cost=0.1, engine={"type": "vllm", "model": "m", "env": {"OMP_NUM_THREADS": 2, "X": "1"}},
                     ray_actor_options={"runtime_env": {"env_vars": {"X": "from-topology"}, "pip": ["y"]}})
    options = actor_options(spec)
    # Values become strings; the deployment's own runtime_env is kept and wins where both set one.
    assert options["runtime_env"] == {"env_vars": {"OMP_NUM_THREADS": "2", "X": "from-topology"}, "pip": ["y"]}
    assert options["num_cpus"] == 0.25
    assert "runtime_env" not in actor_options(AgentSpec(name="b", cost=0.1, engine={"type": "replay", "trace": "t"}))


def test_env_is_applied_once_and_conflicts_are_refused(monkeypatch):
    monkeypatch.setattr(vllm, "_ENV_SET", {})
    monkeypatch.delenv("DISROUTER_TEST_ENV_A", raising=False)
    monkeypatch.setenv("DISROUTER_TEST_ENV_B", "inherited")
    vllm.apply_env("first", {"DISROUTER_TEST_ENV_A": "1", "DISROUTER_TEST_ENV_B": "mine"})
    assert os.environ["DISROUTER_TEST_ENV_A"] == "1"
    assert os.environ["DISROUTER_TEST_ENV_B"] == "mine"  # the topology's value, with a warning
    vllm.apply_env("second", {"DISROUTER_TEST_ENV_A": "1"})  # the same value: nothing to do
    with pytest.raises(EngineError, match="DISROUTER_TEST_ENV_A='2' conflicts with .* agent 'first'"):
        vllm.apply_env("third", {"DISROUTER_TEST_ENV_A": "2"})
    assert os.environ["DISROUTER_TEST_ENV_A"] == "1", "the first engine's value stands"
