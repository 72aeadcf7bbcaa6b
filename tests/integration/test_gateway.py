"""The OpenAI-compatible gateway on the real broker and real Ray Serve, driven by the official
`openai` client over HTTP on 127.0.0.1: answers with the trail and summed usage, streaming,
model names that pick the scenario, OpenAI-style errors, and waits that end with the request."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from ray import serve

from disrouter.gateway.app import build_app as build_gateway
from tests.integration.conftest import make_trace, metrics_until, replay_agent, topology_args

SLOW_S = 60.0  # longer than any wait here: an answer to the slow query never ends a wait early


@pytest.fixture
async def gateway(deploy_topology, ray_serve, kafka_bootstrap, namespace, tmp_path):
    outcomes = {
        "q-mid": {"small": {"decision": "reject"}, "medium": {"decision": "answer", "answer": "903"}},
        "q-easy": {"small": {"decision": "answer", "answer": "12"}, "medium": {"decision": "answer"}},
        "q-slow": {"small": {"decision": "reject"}, "medium": {"decision": "answer", "latency_ms": SLOW_S * 1000}},
    }
    trace = make_trace(tmp_path / "trace.jsonl", outcomes, prompts={q: f"question {q}" for q in outcomes})
    deploy_topology(topology_args(namespace, kafka_bootstrap, [
        replay_agent("small", 0.1, trace, ["medium"]),
        {**replay_agent("medium", 0.4, trace), "engine": {"type": "replay", "trace": str(trace), "simulate_latency": True}},
    ]))
    app = f"{namespace}-gateway"
    serve.run(build_gateway({"namespace": namespace, "kafka": {"bootstrap_servers": kafka_bootstrap}, "timeout_s": 120}),
              name=app, route_prefix=f"/{namespace}/v1", blocking=False)
    handle = serve.get_deployment_handle("Gateway", app)
    yield f"http://127.0.0.1:{ray_serve}/{namespace}/v1", handle
    serve.delete(app)


async def _pending_drops_to_zero(handle, timeout_s: float = 30.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        stats = await handle.stats.remote()
        if stats["pending"] == 0 or asyncio.get_running_loop().time() > deadline:
            return stats
        await asyncio.sleep(0.2)


async def test_openai_client_gets_answers_with_the_trail(gateway, namespace, metrics_port):
    base_url, handle = gateway
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

    models = sorted(m.id for m in (await client.models.list()).data)
    assert models == ["disrouter", "disrouter-balance", "disrouter-cost-first", "disrouter-performance-first"]

    reply = await client.chat.completions.create(
        model="disrouter-balance", messages=[{"role": "user", "content": "question q-mid"}])
    assert reply.choices[0].message.content == "903"
    assert reply.choices[0].finish_reason == "stop"
    # Usage sums every hop: the small agent's reject and the medium agent's answer (10 in, 5 out each).
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (20, 10, 30)
    route = reply.model_extra["disrouter"]
    assert [(h["agent"], h["decision"]) for h in route["trail"]] == [("small", "reject"), ("medium", "answer")]
    assert (route["agent"], route["scenario"], route["alpha"], route["cost"]) == ("medium", "balance", 0.5, 0.4)

    # The model name picks the scenario; a raw α in the extension wins over it.
    easy = await client.chat.completions.create(
        model="disrouter-cost-first", messages=[{"role": "user", "content": "question q-easy"}])
    assert easy.choices[0].message.content == "12"
    assert easy.model_extra["disrouter"]["alpha"] == 0.8
    raw = await client.chat.completions.create(
        model="disrouter", messages=[{"role": "user", "content": "question q-easy"}], extra_body={"disrouter": {"alpha": 0.35}})
    assert raw.model_extra["disrouter"]["alpha"] == 0.35

    # Streaming: the role first, the answer, then usage and the trail on the last chunk.
    stream = await client.chat.completions.create(
        model="disrouter-balance", messages=[{"role": "user", "content": "question q-mid"}],
        stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "903"
    assert chunks[-1].usage.total_tokens == 30
    assert [h["agent"] for h in chunks[-1].model_extra["disrouter"]["trail"]] == ["small", "medium"]

    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="disrouter", messages=[{"role": "assistant", "content": "hi"}])

    # A wait past its bound is an OpenAI-style 504, and it leaves nothing pending behind.
    with pytest.raises(openai.InternalServerError) as late:
        await client.chat.completions.create(
            model="disrouter", messages=[{"role": "user", "content": "question q-slow"}], extra_body={"disrouter": {"timeout_s": 1}})
    assert late.value.status_code == 504 and late.value.code == "timeout"
    assert (await _pending_drops_to_zero(handle))["pending"] == 0

    # The end-to-end view is on the node's metrics endpoint, per model and outcome.
    samples = await metrics_until(metrics_port, namespace, {
        "ray_disrouter_gateway_requests_total{model=disrouter-balance,outcome=ok}": 2,
        "ray_disrouter_gateway_requests_total{model=disrouter,outcome=timeout}": 1,
        "ray_disrouter_gateway_latency_ms_count{model=disrouter-balance}": 2,
    })
    assert samples.get("ray_disrouter_gateway_requests_total{model=disrouter-balance,outcome=ok}") == 2
    assert samples.get("ray_disrouter_gateway_requests_total{model=disrouter,outcome=timeout}") == 1
    assert samples.get("ray_disrouter_gateway_hops_bucket{le=2.5,model=disrouter-balance}") == 2


async def test_a_client_that_goes_away_cancels_its_wait(gateway):
    base_url, handle = gateway
    body = {"model": "disrouter", "messages": [{"role": "user", "content": "question q-slow"}]}
    for stream in (False, True):
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
            request = asyncio.create_task(http.post("/chat/completions", json={**body, "stream": stream}))
            # The query is on its way once the gateway holds its wait.
            deadline = asyncio.get_running_loop().time() + 30
            while (await handle.stats.remote())["pending"] == 0:
                assert asyncio.get_running_loop().time() < deadline, "the gateway never took the request"
                await asyncio.sleep(0.1)
            request.cancel()  # the HTTP client hangs up long before the slow answer exists
            await asyncio.gather(request, return_exceptions=True)
        stats = await _pending_drops_to_zero(handle)
        assert stats["pending"] == 0, f"stream={stream}: the wait outlived its client"


LONG_ANSWER = "Forty-three times twenty-one: 43 * 20 = 860, plus 43 makes 903.\nThe answer is: 903"


@pytest.fixture
async def streaming_gateway(deploy_topology, ray_serve, kafka_bootstrap, namespace, tmp_path):
    """Both agents on a replay engine that streams its reply in pieces (deterministic text, a
    pause between pieces): `small` rejects, so its reject phrase passes the gate it must not
    pass, and `medium` answers."""
    outcomes = {"q-long": {"small": {"decision": "reject"}, "medium": {"decision": "answer", "answer": LONG_ANSWER}}}
    trace = make_trace(tmp_path / "trace.jsonl", outcomes, prompts={q: f"question {q}" for q in outcomes})
    streaming = {"type": "replay", "trace": str(trace), "stream_chars": 8, "stream_delay_ms": 150}
    deploy_topology(topology_args(namespace, kafka_bootstrap, [
        {**replay_agent("small", 0.1, trace, ["medium"]), "engine": streaming},
        {**replay_agent("medium", 0.4, trace), "engine": streaming},
    ]))
    app = f"{namespace}-gateway"
    serve.run(build_gateway({"namespace": namespace, "kafka": {"bootstrap_servers": kafka_bootstrap}, "timeout_s": 120}),
              name=app, route_prefix=f"/{namespace}/v1", blocking=False)
    yield f"http://127.0.0.1:{ray_serve}/{namespace}/v1"
    serve.delete(app)


async def test_the_answering_agents_tokens_stream_through_the_gateway(streaming_gateway):
    client = openai.AsyncOpenAI(base_url=streaming_gateway, api_key="unused", max_retries=0, timeout=120)
    stream = await client.chat.completions.create(
        model="disrouter", messages=[{"role": "user", "content": "question q-long"}],
        stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    deltas = [c.choices[0].delta.content for c in chunks[:-1] if c.choices and c.choices[0].delta.content]
    # The answer arrived in pieces while `medium` generated it, not in one piece at the end, and
    # the pieces make exactly the answer: none of `small`'s reject phrase, nothing twice.
    assert len(deltas) > 1, deltas
    assert "".join(deltas) == LONG_ANSWER
    assert [(h["agent"], h["decision"]) for h in last.model_extra["disrouter"]["trail"]] == [("small", "reject"), ("medium", "answer")]
    assert "answer" not in last.model_extra["disrouter"]  # the streamed text was the answer's beginning
    assert last.usage.total_tokens == 30

    # Not streaming, the same query gets the same answer whole.
    reply = await client.chat.completions.create(model="disrouter", messages=[{"role": "user", "content": "question q-long"}])
    assert reply.choices[0].message.content == LONG_ANSWER
