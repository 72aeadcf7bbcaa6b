"""Per-agent calibration of raw confidence into P(correct), fitted on training lines only.

The fitted maps are returned as the runtime's own structs (`PlattCalibration`,
`IsotonicCalibration` from actors/decision.py), and applied here through those structs' own
`__call__`, so the probability the harness evaluates is exactly the one a deployed agent with
that `calibration:` in its topology computes.

- isotonic: scikit-learn's IsotonicRegression (monotone, clipped outside the fitted range);
  its knots interpolate linearly, which is what IsotonicCalibration does too;
- Platt: a logistic regression on logit(raw confidence), p = sigmoid(a·logit(raw) + b)
  (practically unregularised, C = 1e4: one feature, and the point is the fit, not shrinkage;
  finite so a perfectly separating confidence still gives finite a, b).
"""

from __future__ import annotations

import math

import numpy as np

from disrouter.actors.decision import IsotonicCalibration, PlattCalibration

Calibration = PlattCalibration | IsotonicCalibration
KINDS = ("isotonic", "platt")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def fit_platt(raw: np.ndarray, correct: np.ndarray) -> PlattCalibration:
    raw, correct = np.asarray(raw, float), np.asarray(correct, float)
    rate = float(correct.mean())
    if rate in (0.0, 1.0):
        # One class only: the best constant is the (clipped) observed rate.
        rate = min(max(rate, 1e-3), 1 - 1e-3)
        return PlattCalibration(a=0.0, b=math.log(rate / (1 - rate)))
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4, max_iter=1000)
    model.fit(_logit(raw).reshape(-1, 1), correct.astype(int))
    return PlattCalibration(a=float(model.coef_[0, 0]), b=float(model.intercept_[0]))


def fit_isotonic(raw: np.ndarray, correct: np.ndarray) -> IsotonicCalibration:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    model.fit(np.asarray(raw, float), np.asarray(correct, float))
    return IsotonicCalibration(x=[float(v) for v in model.X_thresholds_], y=[float(v) for v in model.y_thresholds_])


def fit(kind: str, raw: np.ndarray, correct: np.ndarray) -> Calibration:
    if len(raw) == 0:
        raise ValueError("cannot calibrate on no training lines")
    if kind == "isotonic":
        return fit_isotonic(raw, correct)
    if kind == "platt":
        return fit_platt(raw, correct)
    raise ValueError(f"unknown calibration {kind!r}; known: {', '.join(KINDS)}")


def apply(calibration: Calibration, raw: np.ndarray) -> np.ndarray:
    """Calibrated probabilities; NaN (unknown confidence) stays NaN."""
    raw = np.asarray(raw, float)
    out = np.full(raw.shape, np.nan)
    known = ~np.isnan(raw)
    out[known] = [calibration(float(v)) for v in raw[known]]
    return out


def fit_per_agent(kind: str, confidence: np.ndarray, correct: np.ndarray, agents: tuple[str, ...]) -> dict[str, Calibration]:
    """One calibration per agent column, on the rows where both confidence and correctness are known."""
    fitted = {}
    for j, agent in enumerate(agents):
        known = ~np.isnan(confidence[:, j]) & ~np.isnan(correct[:, j])
        if not known.any():
            raise ValueError(f"agent {agent!r} has no training line with both confidence and correctness")
        fitted[agent] = fit(kind, confidence[known, j], correct[known, j])
    return fitted
