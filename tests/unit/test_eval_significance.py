"""Paired bootstrap intervals: each row of an evaluation against the deployed self-routing."""

import numpy as np
import pytest

from disrouter.evaluation import report
from disrouter.evaluation.evalset import EvalInputError, Splits, build
from disrouter.evaluation.harness import evaluate
from disrouter.evaluation.significance import compare, paired_bootstrap
from tests.unit.eval_traces import CHAIN, records


def test_identical_methods_are_a_tie_with_a_zero_interval():
    u = np.array([1.0, 0.0, 0.9, -0.1, 0.5])
    assert paired_bootstrap(u, u.copy()) == (0.0, 0.0, 0.0)
    c = compare("ref", u, u.copy())
    assert (c.reference, c.delta, c.verdict) == ("ref", 0.0, "tie")


@pytest.mark.parametrize("shift, verdict", [(0.3, "ahead"), (-0.3, "behind")])
def test_a_consistent_difference_is_told_apart(shift, verdict):
    rng = np.random.default_rng(1)
    other = rng.choice([0.0, 1.0], size=200) - 0.5 * 0.1
    reference = other + shift + rng.normal(0.0, 0.05, size=200)
    c = compare("ref", reference, other, seed=3)
    assert c.verdict == verdict
    assert c.delta == pytest.approx(float(np.mean(reference - other)), abs=1e-6)
    assert c.low < c.delta < c.high
    assert (c.low > 0) if shift > 0 else (c.high < 0)


def test_noise_of_the_size_of_the_difference_is_a_tie():
    # Right/wrong on different questions, one more right in 40: +0.025 on average, but which
    # questions were drawn moves that by more than itself.
    reference = np.array([1.0] * 21 + [0.0] * 19)
    other = np.array([0.0] * 20 + [1.0] * 20)
    c = compare("ref", reference, other)
    assert c.delta == pytest.approx(0.025)
    assert c.low < 0 < c.high and c.verdict == "tie"


def test_pairing_cancels_what_moves_both_methods():
    # Both methods score the same per-question difficulty plus a steady 0.02 for the reference:
    # unpaired, the spread of the questions would hide it; paired, it is the whole difference.
    rng = np.random.default_rng(7)
    difficulty = rng.uniform(-1.0, 1.0, size=300)
    c = compare("ref", difficulty + 0.02, difficulty)
    assert c.verdict == "ahead" and c.low == pytest.approx(0.02) and c.high == pytest.approx(0.02)


def test_the_interval_narrows_with_more_questions_and_is_seeded():
    rng = np.random.default_rng(0)
    diff_small = rng.choice([-1.0, 0.0, 1.0], size=20)
    diff_large = rng.choice([-1.0, 0.0, 1.0], size=2000)
    _, lo_s, hi_s = paired_bootstrap(diff_small, np.zeros(20))
    _, lo_l, hi_l = paired_bootstrap(diff_large, np.zeros(2000))
    assert (hi_s - lo_s) > 3 * (hi_l - lo_l)  # ∝ 1/√n: 10× in theory
    assert paired_bootstrap(diff_small, np.zeros(20), seed=5) == paired_bootstrap(diff_small, np.zeros(20), seed=5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no test query"):
        paired_bootstrap(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(np.zeros(3), np.zeros(3), level=1.0)


# --- in the harness and the report -------------------------------------------------------------

DECISIONS = {
    "q1": ("answer", "answer", "answer"),
    "q2": ("reject", "answer", "answer"),
    "q3": ("reject", "reject", "reject"),
    "q4": ("answer", "reject", "reject"),
}


def _splits():
    return Splits(None, build(records(decisions=DECISIONS), CHAIN), "all test")


def test_every_row_is_compared_with_the_recorded_decisions_on_the_same_queries():
    ev = evaluate(_splits(), alphas=[0.5], methods=["disrouter-recorded", "smallest", "largest", "random"])
    rows = {r.method: r for r in ev.results}
    assert rows["disrouter-recorded"].versus is None
    assert ev.info["reference"] == "disrouter-recorded"
    for name in ("smallest", "largest", "random", "oracle"):
        v = rows[name].versus
        assert v is not None and v.reference == "disrouter-recorded"
        assert v.delta == pytest.approx(rows["disrouter-recorded"].utility - rows[name].utility, abs=2e-6)
        assert v.low <= v.delta <= v.high
    # The oracle sees the test labels: it is compared, but the report leaves it out.
    text = report.table(ev)
    assert "disrouter-recorded − each method" in text
    assert "vs smallest" in text and "vs oracle" not in text


def test_a_named_reference_and_an_unknown_one():
    ev = evaluate(_splits(), alphas=[0.2], methods=["smallest", "largest"], reference="largest")
    rows = {r.method: r for r in ev.results}
    assert rows["largest"].versus is None
    assert rows["smallest"].versus.reference == "largest"
    with pytest.raises(EvalInputError, match="--reference nobody"):
        evaluate(_splits(), alphas=[0.2], methods=["smallest"], reference="nobody")


def test_no_reference_scored_leaves_rows_uncompared():
    # A trace without recorded decisions: the default reference cannot run, nothing is compared.
    ev = evaluate(Splits(None, build(records(), CHAIN), "all test"), alphas=[0.5], methods=["smallest", "largest"])
    assert all(r.versus is None for r in ev.results)
    assert "paired bootstrap" not in report.table(ev)
