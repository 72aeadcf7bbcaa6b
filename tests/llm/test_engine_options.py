"""Engine option validation: every bad option is named, secrets stay out of topologies."""

from __future__ import annotations

import pytest

from disrouter.actors.engine import build_engine, engine_types
from disrouter.actors.errors import EngineError
from tests.requirements import require_module


def test_registered():
    assert {"vllm", "openai"} <= set(engine_types())


def test_vllm_options_split_engine_args():
    engine = build_engine(
        {"type": "vllm", "model": "smollm2", "max_tokens": 32, "max_model_len": 1024, "tensor_parallel_size": 1},
        agent="a",
    )
    assert engine.options.max_tokens == 32
    assert engine.options.engine_args == {"max_model_len": 1024, "tensor_parallel_size": 1}


@pytest.mark.parametrize(
    "lora,gate,apart",
    [
        (None, {"merge": False}, False),
        ({"merge": False}, {"merge": False}, False),  # one engine, two LoRAs
        ({"merge": True}, {"merge": False}, True),  # the answers' weights are merged: the gate cannot share them
        ({"merge": False}, {"merge": True}, True),
        (None, {"merge": True}, True),
        ({"merge": True}, None, False),
    ],
)
def test_a_gate_gets_an_engine_of_its_own_only_when_an_adapter_is_merged(lora, gate, apart):
    options = {"type": "vllm", "model": "m"}
    if lora is not None:
        options["lora"] = {"name": "answers", "path": "a", **lora}
    if gate is not None:
        options["gate_lora"] = {"name": "gate", "path": "g", **gate}
    assert build_engine(options, agent="a").options.gate_apart is apart


@pytest.mark.parametrize(
    "options,needle",
    [
        ({"type": "vllm"}, "model"),
        ({"type": "vllm", "model": "m", "max_tokens": "many"}, "max_tokens"),
        ({"type": "vllm", "model": "m", "max_tokens": 0}, "max_tokens"),
        ({"type": "vllm", "model": "m", "lora": {"name": "x"}}, "path"),
        ({"type": "vllm", "model": "m", "lora": {"name": "a", "path": "p"}, "gate_lora": {"name": "a", "path": "q"}}, "name of its own"),
        ({"type": "openai", "model": "m"}, "base_url"),
        ({"type": "openai", "base_url": "127.0.0.1:8000", "model": "m"}, "base_url"),
        ({"type": "openai", "base_url": "http://h/v1", "model": "m", "retries": 3}, "retries"),
        ({"type": "openai", "base_url": "http://h/v1", "model": "m", "timeout_s": 0}, "timeout_s"),
        ({"type": "openai", "base_url": "http://h/v1", "model": "m", "api_key": "sk-x"}, "api_key_env"),
        ({"type": "openai", "base_url": "http://h/v1", "model": "m", "headers": {"Authorization": "x"}}, "Authorization"),
    ],
)
def test_bad_option_is_named(options, needle):
    with pytest.raises(EngineError) as info:
        build_engine(options, agent="agent-7")
    message = str(info.value)
    assert needle in message and "agent-7" in message
    assert "sk-x" not in message


def test_unknown_vllm_engine_arg_is_named_once_vllm_is_loaded():
    require_module("vllm.engine.arg_utils")
    with pytest.raises(EngineError, match="max_model_length"):
        build_engine({"type": "vllm", "model": "m", "max_model_length": 10}, agent="a")


async def test_missing_key_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    engine = build_engine({"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "NO_SUCH_KEY_VAR"}, agent="a")
    with pytest.raises(EngineError, match="NO_SUCH_KEY_VAR"):
        await engine.start()


async def test_unreachable_server_is_retried_then_fails():
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    engine = build_engine(
        {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "max_retries": 2, "backoff_s": 0.01},
        agent="a",
    )
    await engine.start()
    from disrouter.actors.engine import EngineRequest

    try:
        with pytest.raises(EngineError, match="3 attempt.*ConnectError"):
            await engine.generate(EngineRequest(query_id="q", prompt="hi", alpha=0.5))
    finally:
        await engine.close()


@pytest.mark.parametrize("name", ["local", "remote"])
def test_llm_examples_validate_and_build(name):
    from pathlib import Path

    from disrouter.topology.load import load_topology
    from disrouter.topology.validate import validate

    _, topology = load_topology(Path(__file__).resolve().parents[2] / "examples" / f"{name}.yaml")
    validate(topology)
    for agent in topology.agents:
        engine = build_engine(agent.engine, agent=agent.name)  # options valid; nothing started
        assert type(engine).__name__ in {"VLLMEngine", "OpenAIEngine"}
    assert topology.agents[0].cost == 0.1 and topology.agents[-1].is_terminal
