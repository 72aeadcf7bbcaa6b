"""Fixtures of the real-LLM tests: one vLLM-CPU engine and one vLLM OpenAI server, shared.

Every start of vLLM costs tens of seconds and gigabytes on a 2-core machine, so the in-process
engine and the server are package-scoped (one each for all of tests/llm, torn down when the
package is done) and the server is launched first, when the run needs it, so its load overlaps
the in-process engine's.

These tests need the `cpu` extra (vllm-cpu) and the SmolLM2 model in the model store; without
vLLM they are skipped (failed under DISROUTER_REQUIRE_LLM=1, as scripts/test.sh runs them), and
a missing model is provisioned here (`disrouter models pull`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import time

import pytest

from tests.requirements import skip_or_fail

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub is reachable; never try it
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

MODEL = "smollm2-135m-instruct"
SERVED_NAME = "smollm2"

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
_server_wanted = False


def pytest_collection_modifyitems(config, items) -> None:
    global _server_wanted
    here = os.path.dirname(__file__)
    _server_wanted = any(
        "openai_server" in getattr(item, "fixturenames", ()) for item in items if str(item.path).startswith(here)
    )


@pytest.fixture(scope="package")
def model_dir() -> str:
    from disrouter.actors.models import is_provisioned, lookup, pull, resolve_model

    if not is_provisioned(lookup(MODEL)):
        pull(MODEL)
    return resolve_model(MODEL)


@pytest.fixture(scope="package")
def api_key() -> str:
    return "sk-test-" + secrets.token_hex(8)


@pytest.fixture(scope="package")
def _server_launch(model_dir, api_key, tmp_path_factory):
    """Launch the OpenAI server early (if any selected test needs it); stop it at the end."""
    if not HAVE_VLLM:
        skip_or_fail("vLLM is not installed (pip install -e '.[cpu]')")
    if not _server_wanted:
        yield None
        return
    from tests.llm.servers import OpenAIServer

    server = OpenAIServer(model_dir, SERVED_NAME, api_key, tmp_path_factory.mktemp("vllm-server") / "server.log")
    server.launch()
    yield server
    server.stop()


@pytest.fixture(scope="package")
async def vllm_engine(_server_launch):
    if not HAVE_VLLM:
        skip_or_fail("vLLM is not installed (pip install -e '.[cpu]')")
    from disrouter.actors.engine import build_engine

    engine = build_engine(
        {"type": "vllm", "model": MODEL, "max_tokens": 48, "max_model_len": 1024, "seed": 0},
        agent="smol",
    )
    # Counts the event loop's turns while the engine starts: a start that blocks the loop (the
    # replica's Kafka clients, health checks) leaves it at 0 (tests/llm/test_vllm_event_loop.py).
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    try:
        await engine.start()
    finally:
        ticker.cancel()
    engine.loop_ticks_during_start = ticks
    print(f"\n[llm] in-process vLLM engine started in {time.perf_counter() - started:.1f} s ({ticks} loop ticks meanwhile)")
    yield engine
    await engine.close()


@pytest.fixture(scope="package")
def openai_server(_server_launch, vllm_engine):
    # Asks for the in-process engine on purpose: it starts while the server process loads, so
    # the two ~50 s starts overlap instead of adding up.
    if _server_launch is None:
        pytest.skip("server not launched")
    server = _server_launch.wait_ready()
    print(f"\n[llm] vLLM OpenAI server ready {server.ready_s:.1f} s after launch")
    return server


@pytest.fixture(scope="package")
async def fault_proxy(openai_server):
    from tests.llm.servers import FaultProxy

    proxy = await FaultProxy(openai_server.base_url).start()
    yield proxy
    await proxy.stop()


@pytest.fixture
def proxy(fault_proxy):
    fault_proxy.reset()
    yield fault_proxy
    fault_proxy.reset()
