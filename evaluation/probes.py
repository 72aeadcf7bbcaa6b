"""Predicting each agent's correctness from text embeddings, trained on the training split.

Three learners, one prediction per agent (column) and query:
- `knn`: mean correctness of the k most cosine-similar training prompts (k = 20);
- `logreg`: an L2 logistic regression per agent (C = 1);
- `mlp`: one multi-label MLP over all agents (one hidden layer of 64, seeded; early stopping
  from 300 training queries on).

`fit_predict` returns the test predictions and, when asked (`oof=True`), *out-of-fold*
predictions for the training queries (kNN leave-one-out, the others 5-fold, seeded): anything
tuned on the training split from these predictions (thresholds, values of passing on) then
sees predictions as noisy as the test ones, not in-sample fits that are overconfident. A
central router tunes nothing on them, so it skips the extra fits.
"""

from __future__ import annotations

import warnings

import numpy as np

LEARNERS = ("knn", "logreg", "mlp")
KNN_K = 20
FOLDS = 5


def _knn(x_train: np.ndarray, y: np.ndarray, x_query: np.ndarray, *, leave_one_out: bool) -> np.ndarray:
    sims = x_query @ x_train.T
    if leave_one_out:
        np.fill_diagonal(sims, -np.inf)
    k = min(KNN_K, x_train.shape[0] - (1 if leave_one_out else 0))
    if k <= 0:
        return np.tile(y.mean(axis=0), (x_query.shape[0], 1))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return y[top].mean(axis=1)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def _fit_columns(learner: str, x: np.ndarray, y: np.ndarray, seed: int):
    """A predict(x) -> (n, m) function fitted on (x, y)."""
    m = y.shape[1]
    if learner == "mlp":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        varying = [j for j in range(m) if 0 < y[:, j].mean() < 1]
        model = None
        if varying:
            # Early stopping holds out 10 %: only worth it when that is more than a handful.
            model = MLPClassifier(
                hidden_layer_sizes=(64,), alpha=1e-3, max_iter=200, early_stopping=x.shape[0] >= 300, random_state=seed
            )
            target = y[:, varying].astype(int)
            with warnings.catch_warnings():
                # A fixed iteration budget is the point (seeded, bounded time); say so once here.
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x, target if len(varying) > 1 else target[:, 0])

        def predict(q: np.ndarray) -> np.ndarray:
            out = np.tile(y.mean(axis=0), (q.shape[0], 1))
            if model is not None:
                proba = model.predict_proba(q)
                out[:, varying] = proba if len(varying) > 1 else proba[:, [1]]
            return out

        return predict
    from sklearn.linear_model import LogisticRegression

    models: list[LogisticRegression | float] = []
    for j in range(m):
        rate = float(y[:, j].mean())
        if rate in (0.0, 1.0):
            models.append(rate)  # one class: the constant is the only honest prediction
        else:
            models.append(LogisticRegression(C=1.0, max_iter=1000).fit(x, y[:, j].astype(int)))

    def predict(q: np.ndarray) -> np.ndarray:
        cols = [np.full(q.shape[0], mdl) if isinstance(mdl, float) else mdl.predict_proba(q)[:, 1] for mdl in models]
        return np.stack(cols, axis=1)

    return predict


def fit_predict(
    learner: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int, *, oof: bool = True
) -> tuple[np.ndarray | None, np.ndarray]:
    """(out-of-fold predictions on train or None, predictions on test), each (n, m) in [0, 1]."""
    if learner not in LEARNERS:
        raise ValueError(f"unknown learner {learner!r}; known: {', '.join(LEARNERS)}")
    y_train = np.asarray(y_train, float)
    if learner == "knn":
        xt, xq = _normalise(x_train), _normalise(x_test)
        return _knn(xt, y_train, xt, leave_one_out=True), _knn(xt, y_train, xq, leave_one_out=False)
    test_pred = _fit_columns(learner, x_train, y_train, seed)(x_test)
    if not oof:
        return None, test_pred
    out = np.empty_like(y_train)
    n = x_train.shape[0]
    folds = np.random.default_rng(seed).permutation(n) % min(FOLDS, n)
    for f in np.unique(folds):
        held = folds == f
        if held.all():  # one query only: predict the prior
            out[held] = y_train.mean(axis=0)
            continue
        out[held] = _fit_columns(learner, x_train[~held], y_train[~held], seed)(x_train[held])
    return out, test_pred
