"""`disrouter train calibrate`'s measurement on the real vLLM engine (SmolLM2, shared fixture):
the reject's probability per scenario, the kept answer graded, the successor's forced answer."""

from __future__ import annotations

import pytest

from disrouter.actors.contracts import Scenario
from disrouter.topology.compile import agent_configs
from disrouter.topology.load import parse_topology
from disrouter.training.calibrate import fit, measure
from disrouter.training.data import Item

pytestmark = pytest.mark.timeout(900)


class Shared:
    """The package's started engine, lent: calibration's start and close leave it running."""

    def __init__(self, engine) -> None:
        self.engine = engine

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def __getattr__(self, name):
        return getattr(self.engine, name)


async def test_calibration_measures_the_served_agent_and_its_successor(vllm_engine):
    engine = {"type": "vllm", "model": "smollm2-135m-instruct"}
    topology = parse_topology({"namespace": "cal", "kafka": {"bootstrap_servers": "127.0.0.1:9"}, "agents": [
        {"name": "small", "cost": 0.1, "next": ["big"], "engine": engine, "max_tokens": 24},
        {"name": "big", "cost": 0.9, "engine": engine, "max_tokens": 96}]})
    configs = agent_configs(topology)
    items = [Item(id="one", task="arith", split="train", prompt="What is 2 + 3?", gold="5", kind="numeric"),
             Item(id="two", task="arith", split="train", prompt="What is 48213 * 9127?", gold="440040051", kind="numeric")]
    built: list[str] = []

    def lend(spec, agent):
        built.append(agent)
        return Shared(vllm_engine)

    rows = {r.id: r for r in await measure(items, configs["small"], configs["big"], build=lend)}
    assert built == ["small", "big"]
    for r in rows.values():
        assert set(r.mass) == set(Scenario) and all(0.0 <= m <= 1.0 for m in r.mass.values())
    # The base model adds small numbers and cannot multiply five digits by four in its head.
    assert rows["one"].correct[Scenario.balance] and rows["one"].successor_correct
    assert not any(rows["two"].correct.values()) and not rows["two"].successor_correct
    fits = fit(list(rows.values()), [0.25, 0.5, 0.75, 1.0], cost=0.1, successor_cost=0.9)
    assert {f.scenario for f in fits} == set(Scenario)
