"""The scenario (α) a query carries changes what a confidence-mode agent decides."""

from disrouter.actors.contracts import Query, Scenario
from tests.integration.conftest import make_trace, replay_agent, topology_args


async def test_per_query_scenario_changes_decisions(deploy_topology, client_factory, kafka_bootstrap, namespace, tmp_path):
    # The small agent is 80% sure. Thresholds (1 − α)^0.5: performance_first 0.894 → reject;
    # balance 0.707 → answer; cost_first 0.447 → answer; raw α = 0.1 → 0.949 → reject.
    trace = make_trace(tmp_path / "trace.jsonl", {
        "q": {"small": {"confidence": 0.8}, "large": {"confidence": 0.99}},
    }, prompts={"q": "How many legs has a spider?"})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [
        replay_agent("small", 0.1, trace, ["large"], awareness="confidence"),
        replay_agent("large", 0.9, trace, awareness="confidence"),
    ], default_scenario="cost_first"))
    asks = {
        "pf": dict(scenario=Scenario.performance_first),
        "bal": dict(scenario=Scenario.balance),
        "cf": dict(scenario=Scenario.cost_first),
        "raw": dict(alpha=0.1),
        "default": dict(),  # the topology default: cost_first
    }
    async with client_factory(namespace) as client:
        for qid, extra in asks.items():  # ids are not in the trace: matched by prompt
            await client.send(Query(id=qid, prompt="How many legs has a spider?", **extra))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", len(asks))}

    assert {k: a.agent for k, a in answers.items()} == {
        "pf": "large", "bal": "small", "cf": "small", "raw": "large", "default": "small",
    }
    assert answers["pf"].alpha == 0.2 and answers["raw"].alpha == 0.1 and answers["default"].alpha == 0.8
    assert answers["pf"].trail[0].confidence == 0.8 and answers["pf"].trail[0].decision == "reject"
