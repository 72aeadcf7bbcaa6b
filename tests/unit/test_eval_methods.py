"""DiSRouter variants, calibration, the cascade and the learned router on hand-made traces."""

import dataclasses

import numpy as np
import pytest

from disrouter.actors.decision import IsotonicCalibration, PlattCalibration
from disrouter.evaluation import calibration
from disrouter.evaluation.embed import HashingEmbedder
from disrouter.evaluation.evalset import Chain, build
from disrouter.evaluation.methods import Context, Unavailable
from disrouter.evaluation.methods.cascade import FrugalCascade, tune_thresholds
from disrouter.evaluation.methods.disrouter import Recorded, SelfRouted, fit_pass_values
from disrouter.evaluation.methods.router import LearnedRouter
from disrouter.evaluation.metrics import score
from tests.unit.eval_traces import CHAIN, CORRECT, records


def ctx_for(train, test, alpha=0.5, embedder=None, shared=None):
    return Context(train, test.hidden(), alpha, 0.5, 0, embedder, {} if shared is None else shared)


# --- recorded decisions ------------------------------------------------------------------------


def test_recorded_decisions_walk_the_chain_and_give_self_awareness_f1():
    decisions = {
        "q1": ("answer", "answer", "answer"),
        "q2": ("reject", "answer", "answer"),
        "q3": ("reject", "reject", "reject"),  # the terminal answers anyway (forced)
        "q4": ("answer", "reject", "reject"),  # a answers wrongly
    }
    test = build(records(decisions=decisions), CHAIN)
    routing = Recorded().route(ctx_for(None, test))
    r = score("disrouter-recorded", "disrouter", routing, test, 0.5, seed=0)
    assert r.routing == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert r.accuracy == pytest.approx(3 / 4)
    assert r.cost == pytest.approx((0.1 + 0.5 + 0.9 + 0.1) / 4)
    assert r.cumulative_cost == pytest.approx((0.1 + 0.6 + 1.5 + 0.1) / 4)
    # a answered q1 (right) and q4 (wrong), rejected q2, q3 (both wrong for a): precision 1/2,
    # recall 1/1, F1 = 2·1/(2+1).
    f1 = r.self_awareness["a"]
    assert (f1.precision, f1.recall, f1.f1) == pytest.approx((0.5, 1.0, 2 / 3), abs=1e-6)
    assert f1.n == 4 and f1.answer_rate == 0.5


def test_recorded_needs_decisions_along_the_walked_path():
    test = build(records(), CHAIN)
    with pytest.raises(Unavailable, match="decision"):
        Recorded().route(ctx_for(None, test))
    gaps = {"q1": ("answer", None, None), "q2": (None, "answer", None), "q3": ("reject", "reject", "answer"), "q4": ("answer", None, None)}
    with pytest.raises(Unavailable, match="1 test queries lack"):
        Recorded().route(ctx_for(None, build(records(decisions=gaps), CHAIN)))


# --- the paper's rule on confidence --------------------------------------------------------------

TEST_CONF = {  # a, b, c
    "q1": (0.9, 0.9, 0.5),
    "q2": (0.6, 0.8, 0.5),
    "q3": (0.3, 0.5, 0.5),
    "q4": (0.75, 0.2, 0.5),
}


def test_paper_rule_on_raw_confidence():
    test = build(records(confidence=TEST_CONF), CHAIN)
    routing = SelfRouted("raw", "paper").route(ctx_for(None, test, alpha=0.5))
    # threshold (1 − 0.5)^0.5 = 0.7071: a answers q1, q4; b answers q1, q2; q3 reaches c.
    assert routing.params["threshold"] == pytest.approx(0.5**0.5)
    assert routing.answer.argmax(axis=1).tolist() == [0, 1, 2, 0]
    assert routing.decisions[:, 0].tolist() == [1, 0, 0, 1]
    # α = 0.8 lowers the bar to 0.447: a answers q2 as well.
    routing = SelfRouted("raw", "paper").route(ctx_for(None, test, alpha=0.8))
    assert routing.answer.argmax(axis=1).tolist() == [0, 0, 1, 0]


def test_calibration_is_fitted_on_train_only():
    # Train: a's confidence is anti-informative at the top; the isotonic fit (PAV) pools it.
    train_conf = {"t1": (0.2, 0.5, 0.5), "t2": (0.4, 0.5, 0.5), "t3": (0.6, 0.5, 0.5), "t4": (0.8, 0.5, 0.5)}
    train_correct = {"t1": (0, 1, 1), "t2": (1, 1, 1), "t3": (0, 0, 1), "t4": (1, 0, 1)}
    train = build(records(train_correct, confidence=train_conf), CHAIN, "train")
    test = build(records(confidence=TEST_CONF), CHAIN)
    shared = {}
    routing = SelfRouted("isotonic", "paper").route(ctx_for(train, test, shared=shared))
    cal_a = routing.params["calibration"]["a"]
    # PAV on y = 0, 1, 0, 1: (1, 0) pools to 0.5 → knots x = 0.2, 0.4, 0.6, 0.8; y = 0, .5, .5, 1.
    assert isinstance(cal_a, IsotonicCalibration)
    assert cal_a.x == [0.2, 0.4, 0.6, 0.8] and cal_a.y == [0.0, 0.5, 0.5, 1.0]
    # b: every confidence 0.5, half right: calibrated 0.5 everywhere.
    assert routing.params["calibration"]["b"](0.9) == pytest.approx(0.5)
    # Test labels cannot move it: flip every test label and refit from scratch.
    flipped = build(records({q: tuple(1 - v for v in o) for q, o in CORRECT.items()}, confidence=TEST_CONF), CHAIN)
    again = SelfRouted("isotonic", "paper").route(ctx_for(train, flipped))
    assert again.params["calibration"]["a"] == cal_a
    assert np.array_equal(again.answer, routing.answer)
    # Routing: calibrated a: q1 0.9 → 1.0 (> .707, answers), q2 0.6 → .5, q3 0.3 → .25, q4 0.75
    # → .875 (answers); b calibrated .5 never answers; so q2, q3 go to c.
    assert routing.answer.argmax(axis=1).tolist() == [0, 2, 2, 0]


def test_platt_on_uninformative_confidence_is_the_base_rate():
    fit = calibration.fit_platt(np.array([0.2, 0.8, 0.2, 0.8]), np.array([0, 1, 1, 0]))
    assert isinstance(fit, PlattCalibration)
    assert fit.a == pytest.approx(0.0, abs=1e-4) and fit.b == pytest.approx(0.0, abs=1e-4)
    informative = calibration.fit_platt(np.array([0.1, 0.3, 0.7, 0.9, 0.6, 0.4]), np.array([0, 0, 1, 1, 0, 1]))
    assert informative.a > 0 and informative(0.9) > informative(0.1)
    one_class = calibration.fit_platt(np.array([0.1, 0.9]), np.array([1, 1]))
    assert one_class(0.1) == pytest.approx(0.999, abs=1e-6)


def test_confidence_variants_say_why_they_cannot_run():
    test = build(records(), CHAIN)
    with pytest.raises(Unavailable, match="confidence"):
        SelfRouted("isotonic", "paper").route(ctx_for(build(records(), CHAIN, "train"), test))
    with pytest.raises(Unavailable, match="training split"):
        SelfRouted("isotonic", "paper").route(ctx_for(None, build(records(confidence=TEST_CONF), CHAIN)))


# --- beyond the paper: the chain-aware rule ------------------------------------------------------


def test_pass_values_by_hand():
    # α = 0.5, costs .1/.5/.9; c always right (utility .55 when a query reaches it).
    p = np.array([[0.9, 0.9, 0.5], [0.4, 0.8, 0.5], [0.2, 0.3, 0.5], [0.1, 0.2, 0.5]])
    correct = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]], dtype=float)
    values = fit_pass_values(p, correct, np.array([0.1, 0.5, 0.9]), 0.5)
    # b: own value p − .25 = .65, .55, .05, −.05; passing is worth .55, b answers the first two.
    assert values[1] == pytest.approx(0.55)
    # a: downstream utility per query .75, .75, .55, .55; a rejects all but the first (own .85),
    # so V̂_a = mean(.75, .55, .55) = .61667 — a fixed point (its rejected set does not change).
    assert values[0] == pytest.approx((0.75 + 0.55 + 0.55) / 3)
    assert np.isnan(values[2])


def test_chain_aware_answers_where_the_myopic_rule_passes_on():
    conf_train = {"t1": (0.9, 0.9, 0.5), "t2": (0.4, 0.8, 0.5), "t3": (0.2, 0.3, 0.5), "t4": (0.1, 0.2, 0.5)}
    correct_train = {"t1": (1, 1, 1), "t2": (0, 1, 1), "t3": (0, 0, 1), "t4": (0, 0, 1)}
    train = build(records(correct_train, confidence=conf_train), CHAIN, "train")
    conf_test = {"q1": (0.95, 0.85, 0.5), "q2": (0.68, 0.7, 0.5)}
    test = build(records({"q1": (1, 1, 1), "q2": (1, 0, 1)}, confidence=conf_test), CHAIN)
    aware = SelfRouted("raw", "chainaware").route(ctx_for(train, test))
    assert aware.params["pass_value"]["a"] == pytest.approx(0.616667, abs=1e-6)
    # q2: a's own value .68 − .05 = .63 ≥ .6167 → answers; the paper's bar .7071 → passes on,
    # and b (.7 < .7071) passes on too, so q2 costs the terminal.
    assert aware.answer.argmax(axis=1).tolist() == [0, 0]
    paper = SelfRouted("raw", "paper").route(ctx_for(train, test))
    assert paper.answer.argmax(axis=1).tolist() == [0, 2]
    assert SelfRouted("raw", "chainaware").label == "central-chainaware-raw"
    assert SelfRouted("raw", "chainaware").family == "router" and SelfRouted("raw", "paper").family == "disrouter"


# --- FrugalGPT cascade ---------------------------------------------------------------------------


def test_cascade_thresholds_are_tuned_on_train_and_blind_to_test():
    chain = Chain(("a", "b"), (0.1, 0.9))
    train_conf = {"t1": (0.1, 0.5), "t2": (0.3, 0.5), "t3": (0.6, 0.5), "t4": (0.9, 0.5)}
    train = build(records({"t1": (0, 1), "t2": (0, 1), "t3": (1, 1), "t4": (1, 1)}, agents=("a", "b"), confidence=train_conf), chain, "train")
    test_conf = {"q1": (0.2, 0.5), "q2": (0.5, 0.5), "q3": (0.7, 0.5)}
    # Test labels that would reward stopping at a everywhere, if the tuner could see them.
    test = build(records({"q1": (1, 0), "q2": (1, 0), "q3": (1, 0)}, agents=("a", "b"), confidence=test_conf), chain)
    routing = FrugalCascade().route(ctx_for(train, test))
    threshold = routing.params["thresholds"]["a"]
    # α = .5: stopping at a is worth .95 if right and −.05 if wrong, passing on .55, so the best
    # train threshold separates .3 from .6: utility (.55 + .55 + .95 + .95) / 4 = .75.
    assert 0.3 < threshold <= 0.6
    assert routing.params["train_utility"] == pytest.approx(0.75)
    assert routing.params["signal"] == "confidence"
    assert routing.answer.argmax(axis=1).tolist() == [1, 0, 0]
    assert routing.ran.tolist() == [[1, 1], [1, 0], [1, 0]]


def test_threshold_search_prefers_the_terminal_when_nothing_beats_it():
    scores = np.array([[0.2, 0.0], [0.8, 0.0]])
    correct = np.array([[0, 1], [0, 1]], dtype=float)  # a is never right
    thresholds, best = tune_thresholds(scores, correct, np.array([0.1, 0.9]), 0.2)
    assert thresholds[0] == np.inf and best == pytest.approx(1 - 0.2 * 0.9)


# --- the central learned router and the probe-based DiSRouter ------------------------------------

EASY = "add two small whole numbers together quickly simple sum"
HARD = "prove the convergence of this improper integral with contour methods"


def _topic_trace(n_per_kind: int, offset: int = 0):
    correct, prompts = {}, {}
    for i in range(offset, offset + n_per_kind):
        correct[f"e{i}"], prompts[f"e{i}"] = (1, 1, 1), f"{EASY} item {i}"
        correct[f"h{i}"], prompts[f"h{i}"] = (0, 0, 1), f"{HARD} item {i}"
    return records(correct, prompts=prompts)


@pytest.mark.parametrize("learner", ["knn", "logreg", "mlp"])
def test_router_sends_easy_questions_to_the_small_agent(learner):
    train = build(_topic_trace(30), CHAIN, "train")
    test = build(_topic_trace(5, offset=100), CHAIN)
    routing = LearnedRouter(learner).route(ctx_for(train, test, embedder=HashingEmbedder))
    choice = dict(zip(test.query_ids, routing.answer.argmax(axis=1).tolist()))
    assert all(choice[q] == 0 for q in choice if q.startswith("e"))
    assert all(choice[q] == 2 for q in choice if q.startswith("h"))
    assert routing.ran.sum(axis=1).tolist() == [1.0] * test.n  # one agent runs


def test_probe_disrouter_and_the_scorer_cascade_learn_the_same_split():
    train = build(_topic_trace(30), CHAIN, "train")
    test = build(_topic_trace(5, offset=100), CHAIN)
    shared = {}
    probe = SelfRouted("probe", "paper").route(ctx_for(train, test, embedder=HashingEmbedder, shared=shared))
    stops = dict(zip(test.query_ids, probe.answer.argmax(axis=1).tolist()))
    assert all(stops[q] == (0 if q.startswith("e") else 2) for q in stops)
    cascade = FrugalCascade().route(ctx_for(train, test, embedder=HashingEmbedder, shared=shared))
    assert cascade.params["signal"] == "scorer(prompt)"  # no answer texts in this trace
    assert all(s == (0 if q.startswith("e") else 2) for q, s in zip(test.query_ids, cascade.answer.argmax(axis=1)))


def test_learned_methods_need_prompts_and_a_training_split():
    test = build(records(prompts={}), CHAIN)
    with pytest.raises(Unavailable, match="training split"):
        LearnedRouter("knn").route(ctx_for(None, test, embedder=HashingEmbedder))
    full = build(records(), CHAIN)
    no_prompt = dataclasses.replace(full, prompts=(None,) * full.n)
    with pytest.raises(Unavailable, match="prompt"):
        LearnedRouter("knn").route(ctx_for(build(records(), CHAIN, "train"), no_prompt, embedder=HashingEmbedder))
