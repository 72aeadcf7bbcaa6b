"""The remote OpenAI-compatible engine against a real local server (vLLM's OpenAI server on
SmolLM2-135M, CPU), directly and through a real fault-injecting proxy for 500s and timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest

from disrouter.actors.engine import EngineRequest, build_engine
from disrouter.actors.errors import EngineError
from tests.llm.conftest import SERVED_NAME
from tests.llm.test_vllm_engine import REPEAT_REJECT

pytestmark = pytest.mark.timeout(900)

KEY_ENV = "DISROUTER_TEST_REMOTE_KEY"


def engine_for(base_url: str, **options):
    options.setdefault("api_key_env", KEY_ENV)
    options.setdefault("max_tokens", 32)
    options.setdefault("backoff_s", 0.05)
    options.setdefault("continuous_usage_stats", True)
    return build_engine({"type": "openai", "base_url": base_url, "model": SERVED_NAME, **options}, agent="remote")


def request(qid: str, prompt: str, **kw) -> EngineRequest:
    kw.setdefault("alpha", 0.5)
    return EngineRequest(query_id=qid, prompt=prompt, **kw)


@pytest.fixture
def key(monkeypatch, api_key):
    monkeypatch.setenv(KEY_ENV, api_key)
    return api_key


async def test_answers_concurrently(openai_server, key):
    engine = engine_for(openai_server.base_url)
    await engine.start()
    try:
        results = await asyncio.gather(
            *(engine.generate(request(f"r{i}", f"What is {i} times 2?", allow_reject=False)) for i in range(6))
        )
    finally:
        await engine.close()
    for result in results:
        assert result.text.strip()
        assert result.tokens_in > 20 and 1 <= result.tokens_out <= 32
        assert not result.stopped_early


async def test_reject_cuts_the_stream(openai_server, key):
    engine = engine_for(openai_server.base_url, max_tokens=48)
    await engine.start()
    try:
        full = await engine.generate(request("f", REPEAT_REJECT, stop_on_reject=False))
        cut = await engine.generate(request("c", REPEAT_REJECT))
    finally:
        await engine.close()
    assert full.text.count("know") >= 2, full.text
    assert cut.stopped_early and cut.decision == "reject"
    assert cut.tokens_out <= 8 < full.tokens_out, (cut.tokens_out, full.tokens_out)


async def test_confidence_from_server_logprobs(openai_server, key):
    engine = engine_for(openai_server.base_url)
    await engine.start()
    try:
        result = await engine.generate(request("p", "What is the capital of France?", want_confidence=True))
    finally:
        await engine.close()
    assert result.confidence is not None and 0.0 < result.confidence <= 1.0


async def test_api_key_from_file(openai_server, api_key, tmp_path):
    secret = tmp_path / "key"
    secret.write_text(api_key + "\n")
    engine = engine_for(openai_server.base_url, api_key_env=None, api_key_file=str(secret))
    await engine.start()
    try:
        result = await engine.generate(request("k", "Say hello.", allow_reject=False))
    finally:
        await engine.close()
    assert result.text.strip()
    assert api_key not in repr(engine)


async def test_wrong_key_fails_at_once(proxy, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    engine = engine_for(proxy.base_url, max_retries=3)
    await engine.start()
    try:
        with pytest.raises(EngineError, match="HTTP 401") as info:
            await engine.generate(request("w", "Hi"))
    finally:
        await engine.close()
    assert proxy.hits == 1  # a 401 is not retried
    assert "sk-wrong" not in str(info.value)


async def test_500_then_success_is_retried(proxy, key):
    proxy.fail_next, proxy.fail_status = 2, 500
    engine = engine_for(proxy.base_url, max_retries=3)
    await engine.start()
    try:
        result = await engine.generate(request("x", "What is the capital of France?", allow_reject=False))
    finally:
        await engine.close()
    assert proxy.hits == 3  # two injected 500s, then the real server's answer
    assert all(proxy.auth_seen)
    assert "paris" in result.text.lower()


async def test_429_retries_exhausted(proxy, key):
    proxy.fail_next, proxy.fail_status = 10, 429
    engine = engine_for(proxy.base_url, max_retries=2)
    await engine.start()
    try:
        with pytest.raises(EngineError, match="3 attempt.*HTTP 429"):
            await engine.generate(request("y", "Hi"))
    finally:
        await engine.close()
    assert proxy.hits == 3


async def test_timeout(proxy, key):
    proxy.stall_s = 5.0  # the proxy holds every request; the engine must give up on its own
    engine = engine_for(proxy.base_url, read_timeout_s=0.5, timeout_s=1.0, max_retries=1)
    await engine.start()
    started = time.perf_counter()
    try:
        with pytest.raises(EngineError, match="2 attempt.*(timeout|Timeout)"):
            await engine.generate(request("t", "Hi"))
    finally:
        await engine.close()
    elapsed = time.perf_counter() - started
    assert proxy.hits == 2
    assert elapsed < 4.0, f"took {elapsed:.1f}s: the timeout did not bound the call"
