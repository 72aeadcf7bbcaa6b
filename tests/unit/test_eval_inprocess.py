"""`disrouter eval --live --in-process`: the topology's agents run here, one engine at a time.

The chain and trace are the live test's (tests/integration/test_eval_live.py), so the numbers
are the ones worked by hand there; the agents are the real replay engine behind the real
`Agent.process`, with no broker and no Ray.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
import yaml

from disrouter.actors.trace import read_trace
from disrouter.cli import main
from disrouter.evaluation.evalset import EvalInputError
from disrouter.evaluation.inprocess import Stopped, stop_on_sigterm, visiting_order
from disrouter.topology.load import parse_topology
from disrouter.training.data import load
from tests.integration.test_eval_live import write_trace


def topology(agents: list[dict]) -> dict:
    return {"namespace": "inproc", "kafka": {"bootstrap_servers": "127.0.0.1:9"}, "agents": agents}


def replay(name: str, trace: str = "t.jsonl", **spec) -> dict:
    return {"name": name, "cost": spec.pop("cost", 0.5), "engine": {"type": "replay", "trace": trace}, **spec}


def test_agents_are_visited_after_every_agent_that_can_hand_them_a_query():
    chain = parse_topology(topology([replay("a", next=["b"]), replay("b", next=["c"]), replay("c")]))
    assert visiting_order(chain) == ["a", "b", "c"]
    # A tree whose leaf `d` is fed by both branches: it comes after both.
    tree = parse_topology({**topology([replay("d"), replay("c", next=["d"]), replay("a", next=["b", "c"]), replay("b", next=["d"])]),
                           "entry": "a"})
    order = visiting_order(tree)
    assert order[0] == "a" and order.index("d") > max(order.index("b"), order.index("c"))


def test_a_peer_mesh_is_refused_with_the_agents_that_loop():
    mesh = parse_topology({**topology([replay("a", next=["b"]), replay("b", next=["a"])]), "max_hops": 2})
    with pytest.raises(EvalInputError, match="peer mesh") as err:
        visiting_order(mesh)
    assert "a, b" in str(err.value) and "--live" in str(err.value)


def test_in_process_run_gives_the_live_numbers_and_every_agents_forced_answer(tmp_path):
    items = load("gsm8k", limit=8).items
    trace = write_trace(tmp_path / "replay.jsonl", items)
    spec = topology([replay("small", str(trace), cost=0.1, next=["large"]), replay("large", str(trace), cost=0.9)])
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump({"applications": [{"name": "inproc", "import_path": "disrouter.topology.app:build_app", "args": spec}]}))
    out = tmp_path / "out"
    code = main(["eval", "--in-process", "--topology", str(path), "--dataset", "gsm8k", "--limit", "8",
                 "--alphas", "0.5", "--forced-alone", "--methods", "oracle,single-*,disrouter-live", "--embedder", "hashing",
                 "--out", str(out), "--no-plots"])
    assert code == 0

    # The deployed phase asks only the held-out questions (the forced phase covers the rest):
    # items 4 and 5 among them, rejected by `small` and answered by `large`.
    test_rows = [i for i, item in enumerate(items) if item.split == "test"]
    held_out = {items[i].id for i in test_rows}
    assert {4, 5} <= set(test_rows) and len(test_rows) < len(items)
    deployed = read_trace(out / "live" / "deployed-alpha0.5.jsonl")
    assert {r.query_id for r in deployed} == held_out
    assert len(deployed) == len(test_rows) + 2
    hops = {(r.query_id, r.agent): r for r in deployed}
    assert hops[(items[4].id, "small")].decision == "reject" and hops[(items[4].id, "large")].correct is True
    assert hops[(items[6].id, "small")].decision == "answer" and hops[(items[6].id, "small")].correct is False
    # Forced alone: every agent's answer to every question.
    forced = {(r.query_id, r.agent): r.correct for r in read_trace(out / "live" / "forced.jsonl")}
    assert [forced[(q.id, "small")] for q in items] == [True] * 4 + [False] * 4
    assert all(forced[(q.id, "large")] for q in items)

    # The merged trace still has every agent's forced line on every question, training ones too
    # (with no deployed decision: the chain never saw them).
    merged = read_trace(out / "live" / "trace-alpha0.5.jsonl")
    assert len(merged) == 2 * len(items)
    assert all(r.decision is None for r in merged if r.query_id not in held_out)

    # One phase per agent: `small` took the held-out deployed queries + 8 forced ones and handed 2 on.
    summary = json.loads((out / "live" / "live-summary.json").read_text())
    phases = {p["phase"]: p for p in summary["phases"]}
    small = phases["agent small"]
    assert (small["sent"], small["answered"], small["forwarded"]) == (len(test_rows) + 8, len(test_rows) + 6, 2)
    assert (phases["agent large"]["sent"], phases["agent large"]["answered"]) == (10, 10)

    results = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    live = results["disrouter-live"]
    assert live["n"] == len(test_rows)
    assert live["accuracy"] == pytest.approx(sum(i not in (6, 7) for i in test_rows) / len(test_rows))
    assert results["single-large"]["accuracy"] == 1.0 and results["oracle"]["accuracy"] == 1.0


def test_a_sigterm_cancels_the_run_so_its_engines_close():
    # Killed outright, the run would skip `engine.close()` and leave vLLM's engine process behind.
    closed: list[str] = []

    async def run() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            closed.append("engine")

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        await stop_on_sigterm(run())

    with pytest.raises(Stopped, match="SIGTERM"):
        asyncio.run(main())
    assert closed == ["engine"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler went with the run


def test_a_cancellation_that_is_not_a_sigterm_stays_a_cancellation():
    async def main() -> None:
        task = asyncio.ensure_future(stop_on_sigterm(asyncio.sleep(30)))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
