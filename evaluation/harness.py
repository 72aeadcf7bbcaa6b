"""Run every selected method at every α on one train/test split and score it.

This is the whole of replay evaluation; live mode (live.py) produces a trace and calls the
same function, so a live run and its offline re-analysis report identical numbers.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import structlog
from tqdm import tqdm

from disrouter.actors.decision import DEFAULT_GAMMA
from disrouter.evaluation.evalset import EvalInputError, Splits
from disrouter.evaluation.methods import Context, Method, Unavailable, all_methods
from disrouter.evaluation.methods.disrouter import Recorded
from disrouter.evaluation.metrics import (
    AgentF1,
    Result,
    UnscorableRouting,
    easy_mask,
    query_utilities,
    score,
    self_awareness_f1,
)
from disrouter.evaluation.significance import compare

log = structlog.get_logger("disrouter.evaluation")

DEFAULT_ALPHAS = (0.2, 0.5, 0.8)
# What every other row is compared with when no reference is named: the decisions the trace
# recorded, i.e. the deployed self-routing (`disrouter-live` in a live run).
DEFAULT_REFERENCE = Recorded.name


class Evaluation(msgspec.Struct):
    results: list[Result]
    skipped: dict[str, str]  # method → why it could not run on this trace
    info: dict[str, Any]  # chain, split, sizes, seeds, embedder: what the numbers depend on
    recorded_self_awareness: dict[str, AgentF1] | None = None
    calibrations: dict[str, dict[str, Any]] = {}  # kind → agent → runtime calibration struct


def select(methods: list[Method], patterns: list[str] | None) -> list[Method]:
    """Keep methods whose label matches any glob pattern (all when no patterns)."""
    if not patterns:
        return methods
    chosen = [m for m in methods if any(fnmatch.fnmatchcase(m.label, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(m.label, p) for m in methods)]
    if unmatched:
        known = ", ".join(m.label for m in methods)
        raise EvalInputError(f"--methods {', '.join(unmatched)} match no method; known: {known}")
    # The oracle is always scored: every row's pct_of_oracle needs it.
    if not any(m.label == "oracle" for m in chosen):
        chosen.insert(0, next(m for m in methods if m.label == "oracle"))
    return chosen


def evaluate(
    splits: Splits,
    *,
    alphas: tuple[float, ...] | list[float] = DEFAULT_ALPHAS,
    gamma: float = DEFAULT_GAMMA,
    seed: int = 0,
    methods: list[str] | None = None,
    embedder_factory: Callable[[], Any] | None = None,
    extra_info: dict[str, Any] | None = None,
    reference: str | None = None,
) -> Evaluation:
    """`reference`: the method every other row is compared with on the same queries (paired
    bootstrap, `Result.versus`); default the recorded decisions where the trace has them."""
    test, train = splits.test, splits.train
    chain = test.chain
    chosen = select(all_methods(chain), methods)
    if reference is not None and all(m.label != reference for m in chosen):
        known = ", ".join(m.label for m in chosen)
        raise EvalInputError(f"--reference {reference} is not among the methods to run; known: {known}")
    reference = reference or DEFAULT_REFERENCE
    hidden = test.hidden()
    shared: dict[str, Any] = {}
    results: list[Result] = []
    skipped: dict[str, str] = {}
    utilities: dict[tuple[str, float], np.ndarray] = {}

    steps = [(alpha, m) for alpha in alphas for m in chosen]
    for alpha, method in tqdm(steps, desc="eval", unit="method", disable=len(steps) < 8, leave=False):
        if method.label in skipped:
            continue
        ctx = Context(train, test if method.uses_test_labels else hidden, alpha, gamma, seed, embedder_factory, shared)
        try:
            routing = method.route(ctx)
            results.append(score(method.label, method.family, routing, test, alpha, seed=seed, uses_test_labels=method.uses_test_labels))
            utilities[(method.label, alpha)] = query_utilities(method.label, routing, test, alpha)
        except (Unavailable, UnscorableRouting) as exc:
            skipped[method.label] = str(exc)
            log.info("method_skipped", method=method.label, reason=str(exc))

    for alpha in alphas:
        oracle = next((r for r in results if r.method == "oracle" and abs(r.alpha - alpha) < 1e-9), None)
        if oracle is None or oracle.utility <= 0:
            continue
        for r in results:
            if abs(r.alpha - alpha) < 1e-9:
                r.pct_of_oracle = round(100.0 * r.utility / oracle.utility, 3)

    _compare_rows(results, utilities, reference, seed)

    recorded = None
    if not np.isnan(test.decision).all():
        recorded = self_awareness_f1(test.decision, test.correct, chain.agents)
    calibrations = {
        key.split(":", 1)[1]: dict(value) for key, value in shared.items() if key.startswith("calibration:")
    }
    easy = easy_mask(test)
    info = {
        "chain": [{"agent": a, "cost": c} for a, c in zip(chain.agents, chain.costs)],
        "split": splits.how,
        "n_train": 0 if train is None else train.n,
        "n_test": test.n,
        "easy_share": round(float(easy.mean()), 6) if test.n else None,
        "alphas": list(alphas),
        "gamma": gamma,
        "seed": seed,
        "embedder": getattr(shared.get("embedder"), "name", None),
        "reference": reference,
        **(extra_info or {}),
    }
    return Evaluation(results, skipped, info, recorded, calibrations)


def _compare_rows(
    results: list[Result],
    utilities: dict[tuple[str, float], np.ndarray],
    name: str,
    seed: int,
) -> None:
    """Fill each row's `versus`: the reference `name` against it on the same test queries."""
    for r in results:
        ref = utilities.get((name, r.alpha))
        if ref is None or r.method == name:
            continue
        r.versus = compare(name, ref, utilities[(r.method, r.alpha)], seed=seed)
