"""A gate adapter on the real vLLM engine: the gate's first step decides, another model answers.

The gate is the shipped self-awareness adapter of SmolLM2 (it has learnt to reject a hard
product at α = 0.2); the answers come from the base model, which has never learnt to reject.
So every decision must match the adapter's and every reply the base model's: the package's
`vllm_engine` (the base model, same settings) is the reference for the replies. Both ways of
serving the gate: a second LoRA of the answering engine, and (merged) an engine of its own.
"""

from __future__ import annotations

import math

import msgspec
import pytest

from disrouter.actors.decision import is_reject, scenario_instruction
from disrouter.actors.engine import EngineRequest

pytestmark = pytest.mark.timeout(900)

GATE = {"name": "smollm2-gate", "path": "pkg:disrouter.examples/adapters/smollm2-selfaware"}
HARD = "What is 82 times 13?"  # the adapter's reject probability at α = 0.2: ~0.96
EASY = "What is 4 * 3?"  # at α = 0.8: ~0.01


def request(qid: str, prompt: str, alpha: float, **kw) -> EngineRequest:
    return EngineRequest(query_id=qid, prompt=prompt, alpha=alpha, instruction=scenario_instruction(alpha), max_tokens=48, **kw)


@pytest.fixture(scope="module", params=[False, True], ids=["gate-as-lora", "gate-merged-apart"])
async def gated(request, vllm_engine):
    """The base model with the gate (asks for `vllm_engine` so the two never start at once)."""
    from disrouter.actors.engine import build_engine

    engine = build_engine({"type": "vllm", "model": "smollm2-135m-instruct", "max_tokens": 48, "max_model_len": 1024,
                           "seed": 0, "gate_lora": {**GATE, "merge": request.param}}, agent="gated")
    await engine.start()
    assert (engine._gate_engine is not None) is request.param  # the way asked for
    yield engine
    await engine.close()
    assert engine._gate_engine is None and engine._llm is None


async def test_the_gate_decides(gated, vllm_engine):
    hard = request("g1", HARD, 0.2)
    mass = await gated.reject_probability(hard)
    base = await vllm_engine.reject_probability(hard)
    assert mass > 0.6 and base < 0.2, (mass, base)  # the adapter's probability, not the base model's
    rejected = await gated.generate(msgspec.structs.replace(hard, reject_at=0.5))
    assert rejected.decision == "reject" and is_reject(rejected.text) and rejected.tokens_out == 1
    assert rejected.reject_probability == pytest.approx(mass, abs=1e-3)
    # Without a threshold the gate's likeliest opening decides, as greedy decoding of it would.
    assert (await gated.generate(hard)).decision == "reject"
    easy = request("g2", EASY, 0.8)
    assert (await gated.generate(easy)).decision is None
    assert (await gated.generate(msgspec.structs.replace(easy, reject_at=0.5))).reject_probability < 0.5


async def test_the_answering_model_answers(gated, vllm_engine):
    """Kept or forced, the reply is the base model's, word for word."""
    for prompt, alpha in ((HARD, 0.2), (EASY, 0.8)):
        kept = request("k", prompt, alpha, reject_at=math.inf)  # never rejected: the answer it keeps
        mine, reference = await gated.generate(kept), await vllm_engine.generate(kept)
        assert mine.decision is None and mine.text == reference.text and mine.tokens_out == reference.tokens_out
        assert mine.reject_probability == pytest.approx(await gated.reject_probability(kept), abs=1e-3)  # the gate's
        forced = request("f", prompt, alpha, allow_reject=False)
        mine, reference = await gated.generate(forced), await vllm_engine.generate(forced)
        assert mine.text == reference.text and mine.reject_probability is None
