"""Every metric against numbers worked by hand on the 4-query trace of eval_traces.py."""

import numpy as np
import pytest

from disrouter.evaluation.evalset import build
from disrouter.evaluation.methods import Context, Routing
from disrouter.evaluation.methods.baselines import Largest, Oracle, OracleChain, Random, Single, Smallest
from disrouter.evaluation.metrics import scenario_name, score
from tests.unit.eval_traces import CHAIN, records

ALPHA = 0.5


@pytest.fixture
def test_set():
    return build(records(latency=100.0), CHAIN)


def run(method, test_set, alpha=ALPHA):
    ctx = Context(None, test_set if method.uses_test_labels else test_set.hidden(), alpha, 0.5, 0)
    return score(method.label, method.family, method.route(ctx), test_set, alpha, seed=0)


def test_oracle_picks_the_cheapest_right_agent_and_the_cheapest_when_none_is(test_set):
    r = run(Oracle(), test_set)
    # q1 → a, q2 → b, q3 → c, q4 (nobody right) → a.
    assert r.routing == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert r.accuracy == pytest.approx(3 / 4)
    assert r.cost == pytest.approx((0.1 + 0.5 + 0.9 + 0.1) / 4)
    assert r.utility == pytest.approx(0.75 - 0.5 * 0.4)
    assert r.cumulative_cost == pytest.approx(0.4)  # a central choice runs one agent
    assert r.easy.n == 1 and r.easy.cost == pytest.approx(0.1)  # easy: the cheaper half (a) is right
    assert r.hard.n == 3 and r.hard.cost == pytest.approx((0.5 + 0.9 + 0.1) / 3)


def test_oracle_breaks_cost_ties_by_chain_order():
    from disrouter.evaluation.evalset import Chain

    chain = Chain(("x", "y"), (0.3, 0.3))
    test_set = build(records({"q": (1, 1)}, agents=("x", "y")), chain)
    assert run(Oracle(), test_set).routing == {"x": 1.0, "y": 0.0}


def test_random_is_the_expected_value_over_agents(test_set):
    r = run(Random(), test_set)
    # Each query: (number of right agents)/3 → (3 + 2 + 1 + 0) / 12.
    assert r.accuracy == pytest.approx(0.5)
    assert r.cost == pytest.approx((0.1 + 0.5 + 0.9) / 3)
    assert r.utility == pytest.approx(0.5 - 0.5 * 0.5)
    assert r.routing == {"a": pytest.approx(1 / 3), "b": pytest.approx(1 / 3), "c": pytest.approx(1 / 3)}
    assert r.latency_ms == pytest.approx(100.0)  # one agent runs, in expectation


def test_single_smallest_largest(test_set):
    b = run(Single("b"), test_set)
    assert (b.accuracy, b.cost, b.utility) == pytest.approx((0.5, 0.5, 0.25))
    assert run(Smallest(), test_set).routing["a"] == 1.0
    largest = run(Largest(), test_set)
    assert largest.routing["c"] == 1.0 and largest.accuracy == pytest.approx(0.75)


def test_oracle_chain_pays_for_the_walk(test_set):
    r = run(OracleChain(), test_set)
    # Stops: q1 a, q2 b, q3 c, q4 c (nobody right: the terminal answers).
    assert r.routing == {"a": 0.25, "b": 0.25, "c": 0.5}
    assert r.cost == pytest.approx((0.1 + 0.5 + 0.9 + 0.9) / 4)
    assert r.cumulative_cost == pytest.approx((0.1 + 0.6 + 1.5 + 1.5) / 4)
    assert r.latency_ms == pytest.approx((100 + 200 + 300 + 300) / 4)
    # Of the 4 queries reaching a, 1 is answered there; 1 of 3 at b; both at c.
    assert r.answer_rate == {"a": 0.25, "b": pytest.approx(1 / 3), "c": 1.0}


def test_latency_and_dollars_are_none_when_unknown():
    test_set = build(records(), CHAIN)
    r = run(Single("a"), test_set)
    assert r.latency_ms is None and r.cost_usd is None


def test_hand_written_routing_scores():
    test_set = build(records(latency=10.0), CHAIN)
    # Half of q1 to a, half to c; everything else to c; c ran for every query.
    answer = np.array([[0.5, 0, 0.5], [0, 0, 1], [0, 0, 1], [0, 0, 1]])
    ran = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]], dtype=float)
    r = score("hand", "baseline", Routing(answer, ran), test_set, 0.2, seed=7)
    assert r.accuracy == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert r.cost == pytest.approx((0.5 + 0.9 * 3) / 4)
    assert r.utility == pytest.approx(0.75 - 0.2 * 0.8)
    assert r.cumulative_cost == pytest.approx((1.0 + 1.5 + 0.9 + 0.9) / 4)
    assert r.latency_ms == pytest.approx((20 + 30 + 10 + 10) / 4)
    assert r.scenario == "performance_first" and r.seed == 7


def test_a_routing_must_answer_every_query_once():
    test_set = build(records(), CHAIN)
    bad = np.array([[1, 1, 0]] * 4, dtype=float)
    with pytest.raises(ValueError, match="exactly one agent"):
        score("bad", "baseline", Routing(bad, bad), test_set, 0.5, seed=0)


def test_scenario_names():
    assert [scenario_name(a) for a in (0.2, 0.5, 0.8, 0.35)] == ["performance_first", "balance", "cost_first", "alpha=0.35"]
