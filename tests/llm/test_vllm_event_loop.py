"""The vLLM engine keeps blocking work off the agent's event loop, where the replica's Kafka
consumer, producer and health check run: the engine's start runs in a worker thread, and each
request's chat template is rendered and tokenised in the engine's tokenizer thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from disrouter.actors.engine import EngineRequest

pytestmark = pytest.mark.timeout(900)


def test_the_loop_kept_turning_while_the_engine_started(vllm_engine):
    # The fixture counts 50 ms ticks of the loop during engine.start(): a start that blocks
    # the loop (as AsyncLLM.from_engine_args on it did) lets none through.
    assert vllm_engine.loop_ticks_during_start > 0


async def test_tokenisation_runs_off_the_loop(vllm_engine):
    loop_thread = threading.get_ident()
    seen: list[int] = []
    tokenizer = vllm_engine._tokenizer

    class Spy:
        """The real tokenizer, noting which thread calls its chat template."""

        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def apply_chat_template(self, *args, **kwargs):
            seen.append(threading.get_ident())
            return tokenizer.apply_chat_template(*args, **kwargs)

    vllm_engine._tokenizer = Spy()
    try:
        requests = [EngineRequest(query_id=f"t{i}", prompt=f"What is {i} + 1?", alpha=0.5, allow_reject=False, max_tokens=4)
                    for i in range(3)]
        results = await asyncio.gather(*(vllm_engine.generate(r) for r in requests))
    finally:
        vllm_engine._tokenizer = tokenizer
    assert all(r.tokens_in > 0 for r in results)
    assert len(seen) == 3 and loop_thread not in seen
