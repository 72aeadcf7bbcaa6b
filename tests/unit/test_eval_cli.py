"""`disrouter eval` end to end: a synthetic trace worked by hand, and the real shared trace."""

import json
from collections import defaultdict
from pathlib import Path

import pytest

from disrouter.cli import main
from tests.unit.eval_traces import records, write

# Shipped in the project (traces/gsm8k-zeroeval: Apache-2.0, with its NOTICE).
SHARED_TRACE = Path(__file__).resolve().parents[2] / "traces" / "gsm8k-zeroeval" / "trace.jsonl"
PNG = b"\x89PNG\r\n\x1a\n"


def by_key(results):
    return {(r["method"], r["alpha"]): r for r in results}


def test_eval_on_a_synthetic_trace(tmp_path, capsys):
    # Train: t1..t4; test: the 4-query set of eval_traces.py, with confidence and decisions.
    conf = {"q1": (0.9, 0.9, 0.5), "q2": (0.6, 0.8, 0.5), "q3": (0.3, 0.5, 0.5), "q4": (0.75, 0.2, 0.5)}
    dec = {"q1": ("answer",) * 3, "q2": ("reject", "answer", "answer"), "q3": ("reject", "reject", "answer"), "q4": ("answer", "reject", "answer")}
    train_correct = {"t1": (1, 1, 1), "t2": (0, 1, 1), "t3": (0, 0, 1), "t4": (1, 0, 1)}
    train_conf = {"t1": (0.8, 0.9, 0.5), "t2": (0.3, 0.7, 0.5), "t3": (0.2, 0.2, 0.5), "t4": (0.7, 0.3, 0.5)}
    train_dec = {q: ("answer",) * 3 for q in train_correct}
    rows = records(train_correct, split="train", confidence=train_conf, decisions=train_dec, latency=50.0)
    rows += records(split="test", confidence=conf, decisions=dec, latency=50.0)
    trace = write(tmp_path / "trace.jsonl", rows)
    out = tmp_path / "out"
    code = main(["eval", str(trace), "--agents", "a:0.1,b:0.5,c:0.9", "--alphas", "0.2,0.5", "--out", str(out), "--embedder", "hashing"])
    printed = capsys.readouterr().out
    assert code == 0

    results = json.loads((out / "results.json").read_text())
    rows = by_key(results)
    required = {"method", "scenario", "alpha", "accuracy", "cost", "utility", "pct_of_oracle", "n"}
    assert all(required <= set(r) for r in results)
    oracle = rows[("oracle", 0.5)]
    assert (oracle["accuracy"], oracle["cost"], oracle["utility"], oracle["n"]) == pytest.approx((0.75, 0.4, 0.55, 4))
    assert oracle["pct_of_oracle"] == 100.0 and oracle["scenario"] == "balance"
    rnd = rows[("random", 0.5)]
    assert rnd["utility"] == pytest.approx(0.25) and rnd["pct_of_oracle"] == pytest.approx(100 * 0.25 / 0.55, abs=1e-3)
    rec = rows[("disrouter-recorded", 0.2)]
    # Recorded stops: q1 a, q2 b, q3 c, q4 a → acc 3/4, cost .4, cumulative (.1+.6+1.5+.1)/4.
    assert (rec["accuracy"], rec["cost"], rec["cumulative_cost"]) == pytest.approx((0.75, 0.4, 0.575))
    assert rec["latency_ms"] == pytest.approx((50 + 100 + 150 + 50) / 4)
    assert rec["routing"] == {"a": 0.5, "b": 0.25, "c": 0.25}
    raw = rows[("disrouter-raw", 0.5)]
    assert raw["routing"] == {"a": 0.5, "b": 0.25, "c": 0.25}  # threshold .707 on raw confidence
    assert raw["params"]["threshold"] == pytest.approx(0.5**0.5)
    # Every DiSRouter variant that can run on this trace did, and its name says so.
    ran = {r["method"] for r in results}
    assert {"disrouter-recorded", "disrouter-raw", "disrouter-isotonic", "disrouter-platt", "central-chainaware-isotonic"} <= ran
    assert {"frugalgpt-cascade", "router-knn", "single-a", "smallest", "largest"} <= ran
    assert rows[("frugalgpt-cascade", 0.5)]["params"]["signal"] == "confidence"

    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["info"]["n_train"] == 4 and analysis["info"]["n_test"] == 4
    assert analysis["recorded_self_awareness"]["a"]["f1"] == pytest.approx(2 / 3, abs=1e-6)
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["isotonic"]["a"]["type"] == "isotonic" and calibration["platt"]["b"]["type"] == "platt"
    for name in ("utility_vs_alpha.png", "cost_accuracy.png", "routing.png", "answer_rate.png"):
        assert (out / name).read_bytes().startswith(PNG)
    assert "α = 0.5 (balance), n = 4 test queries" in printed and "disrouter-recorded" in printed


def test_eval_on_the_real_gsm8k_trace(tmp_path, capsys):
    out = tmp_path / "out"
    chain = "gemma2-2b:0.1,gemma2-9b:0.5,gemma2-27b:0.9"
    code = main(["eval", str(SHARED_TRACE), "--agents", chain, "--out", str(out), "--embedder", "hashing", "--no-plots"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    skipped = json.loads((out / "analysis.json").read_text())["skipped"]

    # Recompute from the raw file, independently of the harness: test-split accuracies and the oracle.
    correct = defaultdict(dict)
    with SHARED_TRACE.open() as fh:
        for line in fh:
            row = json.loads(line)
            if row["split"] == "test":
                correct[row["query_id"]][row["agent"]] = row["correct"]
    agents, costs = ["gemma2-2b", "gemma2-9b", "gemma2-27b"], [0.1, 0.5, 0.9]
    n = len(correct)
    rows = by_key(results)
    for agent in agents:
        acc = sum(c[agent] for c in correct.values()) / n
        assert rows[(f"single-{agent}", 0.5)]["accuracy"] == pytest.approx(acc, abs=1e-6)
    oracle_pick = [next((k for k, a in enumerate(agents) if c[a]), 0) for c in correct.values()]
    oracle_acc = sum(correct[q][agents[k]] for q, k in zip(correct, oracle_pick)) / n
    oracle_cost = sum(costs[k] for k in oracle_pick) / n
    for alpha in (0.2, 0.5, 0.8):
        o = rows[("oracle", alpha)]
        assert o["n"] == n
        assert (o["accuracy"], o["cost"]) == pytest.approx((oracle_acc, oracle_cost), abs=1e-6)
        # The oracle is the per-query optimum: nothing beats it, and it is 100 % of itself.
        assert all(r["utility"] <= o["utility"] + 1e-9 for r in results if r["alpha"] == alpha)
    # The baselines that need no confidence ran; the rules that need it say why they did not.
    ran = {r["method"] for r in results}
    assert {"frugalgpt-cascade", "router-knn", "router-logreg", "disrouter-probe", "central-chainaware-probe", "random"} <= ran
    assert "decision" in skipped["disrouter-recorded"] and "confidence" in skipped["disrouter-isotonic"]
    assert rows[("frugalgpt-cascade", 0.5)]["params"]["signal"] == "scorer(prompt+answer)"
