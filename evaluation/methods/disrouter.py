"""DiSRouter on a chain: each agent decides alone, a reject passes the query on.

Variants (all names start with `disrouter`):

- `disrouter-recorded`: the decisions the trace recorded (a live run, or a trace of trained
  self-aware agents), replayed along the chain. Those decisions were made at whatever α the
  run used; the same routing is scored at every α of the report.
- the paper's rule on a self-assessed probability p̂ of being right: answer iff
  p̂ > (1 − α)^γ (the optimum of its RL reward). p̂ comes from a *signal*:
    `disrouter-isotonic` / `disrouter-platt`: the trace's confidence, calibrated per agent on
    the training split (the fitted maps are the runtime's calibration structs);
    `disrouter-raw`: the confidence as is (needs no training split);
    `disrouter-probe`: no confidence in the trace, so each agent gets a self-assessment probe of
    its own: a logistic regression from the prompt's embedding to that agent's correctness,
    trained on its own training lines only (a stand-in for a model's trained self-awareness,
    which the trace cannot show; it still needs no other agent, so it stays distributed).
- beyond the paper, `central-chainaware-<signal>`: the paper's rule is myopic, it ignores
  what passing on is worth. This one is a *central* baseline, not self-routing: fitting V̂
  needs every agent's forced correctness on the training queries (who would have answered
  downstream), and it tunes one value per agent on them. Each agent still decides alone at
  serving time, but only after a central fit over the whole chain. Agent j answers iff p̂ − α·c_j ≥ V̂_j, where V̂_j is the mean
  utility its *rejected* training queries got downstream (correct − α·cost of whoever answered
  them). V̂ depends on which queries j rejects and which reach j, so it is found by a fixed
  point on the training split (backward over the chain for the values, forward for who
  reaches whom). The p̂ it is fitted on are out of fold (calibration fitted on the other folds
  of the training split, as the probe's are), so V̂ is tuned on self-assessments as noisy as
  the test ones, not on a calibration fitted to the same rows. The terminal agent always answers.
"""

from __future__ import annotations

import numpy as np

from disrouter.actors.decision import reject_threshold
from disrouter.evaluation import calibration as calib
from disrouter.evaluation.evalset import Chain
from disrouter.evaluation.methods.base import Context, Method, Routing, Unavailable, first_answer, register
from disrouter.evaluation.methods.features import correctness_probe

SIGNALS = ("isotonic", "platt", "raw", "probe")
RULES = ("paper", "chainaware")


@register
class Recorded(Method):
    name = "disrouter-recorded"
    family = "disrouter"

    def route(self, ctx: Context) -> Routing:
        decision = ctx.test.decision
        if np.isnan(decision).all():
            raise Unavailable(f"{self.name} needs recorded `decision`s; the trace has none")
        answers = decision == 1.0
        stop = first_answer(answers)
        m = ctx.test.chain.m
        failed = ctx.test.failed if ctx.test.failed is not None else np.zeros(ctx.test.n, bool)
        # A failed query went as far as anyone could take it: it counts as the terminal's, wrong.
        stop = np.where(failed, m - 1, stop)
        before = np.arange(m)[None, :] < stop[:, None]
        missing = (np.isnan(decision) & before & ~failed[:, None]).any(axis=1)
        if missing.any():
            first = ctx.test.query_ids[int(np.argmax(missing))]
            raise Unavailable(
                f"{self.name}: {int(missing.sum())} test queries lack a recorded decision of an agent "
                f"before the one that answered (e.g. {first!r})"
            )
        routing = Routing.chain(stop, m, decisions=np.where(np.isnan(decision), np.nan, answers))
        routing.failed = failed if failed.any() else None
        return routing


def self_assessment(ctx: Context, signal: str, method: str) -> tuple[np.ndarray | None, np.ndarray, dict]:
    """(p̂ on the training split or None, p̂ on the test split, what was fitted)."""
    m = ctx.test.chain.m
    if signal == "probe":
        oof, test = correctness_probe(ctx, "logreg", method)
        return oof, test, {"probe": "logreg on prompt embedding"}
    conf = ctx.test.confidence[:, : m - 1]  # the terminal answers anyway
    if ctx.test.n == 0 or np.isnan(conf).any():
        raise Unavailable(f"{method} needs `confidence` on every test line of the non-terminal agents")
    if signal == "raw":
        train_p = None
        if ctx.train is not None and not np.isnan(ctx.train.confidence).any():
            train_p = ctx.train.confidence
        return train_p, ctx.test.confidence, {}
    train = ctx.need_train(method)
    if np.isnan(train.confidence).any():
        raise Unavailable(f"{method} needs `confidence` on every training line")
    fitted = ctx.memo(
        f"calibration:{signal}",
        lambda: calib.fit_per_agent(signal, train.confidence, train.correct, train.chain.agents),
    )
    agents = ctx.test.chain.agents
    train_p = ctx.memo(f"calibration-oof:{signal}", lambda: _out_of_fold(signal, train, ctx.seed))
    test_p = np.stack([calib.apply(fitted[a], ctx.test.confidence[:, j]) for j, a in enumerate(agents)], 1)
    return train_p, test_p, {"calibration": fitted}


def _out_of_fold(signal: str, train, seed: int, folds: int = 5) -> np.ndarray:
    """Calibrated training p̂, each row's from a calibration fitted without that row."""
    n = train.n
    fold = np.random.default_rng(seed).permutation(n) % min(folds, n)
    out = np.empty_like(train.confidence)
    for f in np.unique(fold):
        held = fold == f
        rest = ~held if (~held).any() else held
        fitted = calib.fit_per_agent(signal, train.confidence[rest], train.correct[rest], train.chain.agents)
        for j, a in enumerate(train.chain.agents):
            out[held, j] = calib.apply(fitted[a], train.confidence[held, j])
    return out


def fit_pass_values(p: np.ndarray, correct: np.ndarray, costs: np.ndarray, alpha: float, max_rounds: int = 20) -> np.ndarray:
    """V̂_j for every non-terminal agent j (the terminal's entry is NaN); see the module doc."""
    n, m = p.shape
    own = p - alpha * costs[None, :]
    reach = np.ones((n, m), bool)
    values = np.full(m, np.nan)
    for _ in range(max_rounds):
        # Backward: utility of a query that arrives at j, given the policies after j.
        down = correct[:, m - 1] - alpha * costs[m - 1]
        answer = np.zeros((n, m), bool)
        answer[:, m - 1] = True
        for j in range(m - 2, -1, -1):
            pool = reach[:, j] if reach[:, j].any() else np.ones(n, bool)
            v = float(down[pool].mean())
            for _ in range(100):  # V̂ = mean downstream utility of the queries j rejects at V̂
                rejected = pool & (own[:, j] < v)
                if not rejected.any():
                    break
                v_new = float(down[rejected].mean())
                if abs(v_new - v) < 1e-12:
                    v = v_new
                    break
                v = v_new
            values[j] = v
            answer[:, j] = own[:, j] >= v
            down = np.where(answer[:, j], correct[:, j] - alpha * costs[j], down)
        # Forward: which training queries reach which agent under these policies.
        new_reach = np.ones((n, m), bool)
        for j in range(1, m):
            new_reach[:, j] = new_reach[:, j - 1] & ~answer[:, j - 1]
        if (new_reach == reach).all():
            break
        reach = new_reach
    return values


@register
class SelfRouted(Method):
    name = "disrouter"

    def __init__(self, signal: str = "isotonic", rule: str = "paper") -> None:
        if signal not in SIGNALS or rule not in RULES:
            raise ValueError(f"unknown DiSRouter variant {signal}/{rule}")
        self.signal, self.rule = signal, rule

    @property
    def label(self) -> str:
        return f"disrouter-{self.signal}" if self.rule == "paper" else f"central-chainaware-{self.signal}"

    @property
    def family(self) -> str:  # type: ignore[override]
        return "disrouter" if self.rule == "paper" else "router"

    def route(self, ctx: Context) -> Routing:
        chain: Chain = ctx.test.chain
        train_p, test_p, fitted = self_assessment(ctx, self.signal, self.label)
        params: dict = dict(fitted)
        if self.rule == "paper":
            threshold = reject_threshold(ctx.alpha, ctx.gamma)
            decisions = test_p > threshold
            params["threshold"] = threshold
        else:
            train = ctx.need_train(self.label)
            if train_p is None:
                raise Unavailable(f"{self.label} needs the self-assessment on the training split")
            values = fit_pass_values(train_p, train.correct, chain.cost_array, ctx.alpha)
            decisions = test_p - ctx.alpha * chain.cost_array[None, :] >= np.nan_to_num(values, nan=-np.inf)[None, :]
            params["pass_value"] = {a: (None if np.isnan(v) else round(float(v), 6)) for a, v in zip(chain.agents, values)}
        # The terminal answers whatever it decides; its own decision is kept for self-awareness F1.
        stop = first_answer(decisions)
        decisions = np.where(np.isnan(test_p), np.nan, decisions.astype(float))
        return Routing.chain(stop, chain.m, decisions=decisions, **params)

    @classmethod
    def variants(cls) -> list[SelfRouted]:
        return [cls(s, r) for r in RULES for s in SIGNALS if not (r == "chainaware" and s in ("platt", "raw"))]
