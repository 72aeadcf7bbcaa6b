"""The gateway's request handling without HTTP or Kafka: model ids → network and scenario,
messages → prompt, lenient OpenAI decoding, bounded waits (the real path: tests/integration)."""

from __future__ import annotations

import msgspec
import pytest

from disrouter.actors.contracts import Scenario
from disrouter.gateway.protocol import ChatCompletionRequest, ChatMessage
from disrouter.gateway.serving import ChatService, GatewayError, GatewaySpec, prompt_of


def request(model: str, **extra) -> ChatCompletionRequest:
    body = {"model": model, "messages": [{"role": "user", "content": "What is 4 * 3?"}], **extra}
    return msgspec.json.decode(msgspec.json.encode(body), type=ChatCompletionRequest)


def spec(**args) -> GatewaySpec:
    return msgspec.convert(args, GatewaySpec)  # as Serve's `args:` arrive


def test_model_ids_pick_the_network_and_the_scenario():
    service = ChatService(spec(namespace="local", networks=[{"namespace": "mesh"}, {"namespace": "tree", "model": "t"}]))
    assert sorted(m.id for m in service.list_models().data) == sorted(
        f"{prefix}{suffix}" for prefix in ("disrouter", "mesh", "t")
        for suffix in ("", "-performance-first", "-balance", "-cost-first"))
    client, scenario = service.network_of(request("disrouter"))
    assert (client.namespace, scenario) == ("local", None)
    client, scenario = service.network_of(request("mesh-cost_first"))
    assert (client.namespace, scenario) == ("mesh", Scenario.cost_first)
    assert service.network_of(request("t-balance"))[0].namespace == "tree"
    with pytest.raises(GatewayError) as missing:
        service.network_of(request("gpt-4o"))
    assert missing.value.status == 404 and missing.value.body.error.code == "model_not_found"


def test_a_gateway_needs_a_network_and_distinct_model_ids():
    with pytest.raises(ValueError, match="namespace"):
        ChatService(spec())
    with pytest.raises(ValueError, match="share the model id"):
        ChatService(spec(namespace="a", networks=[{"namespace": "b", "model": "disrouter"}]))


def test_openai_fields_disrouter_does_not_use_are_ignored_and_its_own_are_read():
    body = request("disrouter", temperature=0.2, top_p=0.9, n=1, user="ana",
                   disrouter={"alpha": 0.35, "tags": ["math"], "max_hops": 2, "timeout_s": 5})
    service = ChatService(spec(namespace="local", timeout_s=60))
    query = service.query_of(body, None)
    assert (query.prompt, query.alpha, query.tags, query.max_hops, query.metadata) == ("What is 4 * 3?", 0.35, ["math"], 2, {"user": "ana"})
    assert query.id and query.id.startswith("chatcmpl-")
    assert service.timeout_of(body) == 5  # a request may shorten the wait …
    assert service.timeout_of(request("disrouter", disrouter={"timeout_s": 600})) == 60  # … never lengthen it
    with pytest.raises(msgspec.ValidationError):
        request("disrouter", disrouter={"trail": []})  # agent-only fields are not DiSRouter options


def test_the_prompt_is_the_question_alone_or_the_whole_conversation():
    user = ChatMessage(role="user", content="Q2")
    assert prompt_of([user]) == "Q2"
    assert prompt_of([ChatMessage(role="system", content="Be brief."), msgspec.convert({"role": "user", "content": [{"type": "text", "text": "Q1"}]}, ChatMessage),
                      ChatMessage(role="assistant", content="A1"), user]) == "System: Be brief.\n\nUser: Q1\n\nAssistant: A1\n\nUser: Q2\n\nAssistant:"
    for bad in ([], [ChatMessage(role="assistant", content="hi")]):
        with pytest.raises(GatewayError) as error:
            prompt_of(bad)
        assert error.value.status == 400
