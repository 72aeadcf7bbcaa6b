"""Is one method's utility really above another's? A paired bootstrap over the test queries.

Two methods scored on the same few hundred queries differ by a few hundredths of utility from
which queries happened to be drawn alone (re-running a live evaluation moved the baselines by up
to 0.027 with the same agents). A table of means cannot tell that from a real difference, so
each row is compared with a reference method (the deployed self-routing, by default) on the
same queries: resample the queries with replacement, take the mean of the per-query utility
differences each time, and report the percentile interval. Paired, because both methods
answered the same questions: question difficulty, which moves both, cancels out.

    delta  = mean_i (u_ref[i] − u[i])        > 0: the reference is ahead of this method
    [low, high]                              its 95 % percentile interval (2,000 resamples)
    verdict: "ahead" (low > 0), "behind" (high < 0), else "tie"

The resampling is seeded (the evaluation's seed), so one trace gives one interval.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
_CHUNK = 250  # resamples drawn at once: bounds memory at _CHUNK × n indices for large test sets

Verdict = Literal["ahead", "behind", "tie"]


class Comparison(msgspec.Struct):
    """The reference method against one row, on the same test queries."""

    reference: str
    delta: float  # utility(reference) − utility(this row)
    low: float
    high: float
    verdict: Verdict  # of the reference: ahead of this row, behind it, or not told apart


def paired_bootstrap(
    reference: np.ndarray,
    other: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean difference, low, high): the percentile interval of mean(reference − other)."""
    if reference.shape != other.shape or reference.ndim != 1:
        raise ValueError(f"paired comparison needs two equally long vectors, not {reference.shape} and {other.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")
    diff = np.asarray(reference, dtype=float) - np.asarray(other, dtype=float)
    n = diff.size
    if n == 0:
        raise ValueError("no test query to compare on")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        stop = min(start + _CHUNK, resamples)
        picks = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[picks].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(diff.mean()), float(low), float(high)


def compare(reference_name: str, reference: np.ndarray, other: np.ndarray, *, seed: int = 0) -> Comparison:
    delta, low, high = paired_bootstrap(reference, other, seed=seed)
    # Rounded as results.json rounds utilities; the verdict is read from the unrounded bounds.
    verdict: Verdict = "ahead" if low > 0 else "behind" if high < 0 else "tie"
    return Comparison(reference_name, round(delta, 6), round(low, 6), round(high, 6), verdict)
