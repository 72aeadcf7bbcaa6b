"""Features shared by the learned methods, computed once per evaluation (not per α)."""

from __future__ import annotations

import numpy as np

from disrouter.evaluation import probes
from disrouter.evaluation.evalset import EvalSet
from disrouter.evaluation.methods.base import Context, Unavailable

NO_ANSWER = "(no answer)"


def embedder(ctx: Context):
    if ctx.embedder_factory is None:
        raise Unavailable("no text embedder configured")
    return ctx.memo("embedder", ctx.embedder_factory)


def prompt_embeddings(ctx: Context, split: EvalSet, method: str) -> np.ndarray:
    if not split.has_prompts:
        raise Unavailable(f"{method} needs the `prompt` of every {split.name} query")
    return ctx.memo(f"prompt-emb:{split.name}", lambda: embedder(ctx).encode(list(split.prompts)))


def correctness_probe(ctx: Context, learner: str, method: str, *, oof: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Each agent's predicted correctness from the prompt alone: (out-of-fold on train, test)."""
    train = ctx.need_train(method)
    x_train = prompt_embeddings(ctx, train, method)
    x_test = prompt_embeddings(ctx, ctx.test, method)
    if not oof and f"probe:{learner}:oof" in ctx.shared:  # the fuller fit serves both
        return ctx.shared[f"probe:{learner}:oof"]
    return ctx.memo(
        f"probe:{learner}:{'oof' if oof else 'test'}",
        lambda: probes.fit_predict(learner, x_train, train.correct, x_test, ctx.seed, oof=oof),
    )


def answer_scorer(ctx: Context, method: str) -> tuple[np.ndarray, np.ndarray, str]:
    """FrugalGPT's scorer: P(answer is right | query, answer), one logistic regression per agent
    on [embed(prompt), embed(answer)]; prompt only when a split has no answer texts at all.

    Returns (out-of-fold on train, test, which signal was used)."""
    train = ctx.need_train(method)
    x_train = prompt_embeddings(ctx, train, method)
    x_test = prompt_embeddings(ctx, ctx.test, method)
    # A missing answer (the model gave none the trace could record) is itself telling, so it
    # becomes a fixed text rather than dropping the answer from the features altogether.
    with_answers = all(any(a is not None for row in split.answers for a in row) for split in (train, ctx.test))

    def compute():
        if not with_answers:
            oof, test = probes.fit_predict("logreg", x_train, train.correct, x_test, ctx.seed)
            return oof, test, "scorer(prompt)"
        enc = embedder(ctx)
        oof_cols, test_cols = [], []
        for j in range(train.chain.m):
            a_train = enc.encode([row[j] or NO_ANSWER for row in train.answers])
            a_test = enc.encode([row[j] or NO_ANSWER for row in ctx.test.answers])
            oof, test = probes.fit_predict(
                "logreg",
                np.hstack([x_train, a_train]),
                train.correct[:, [j]],
                np.hstack([x_test, a_test]),
                ctx.seed,
            )
            oof_cols.append(oof[:, 0])
            test_cols.append(test[:, 0])
        return np.stack(oof_cols, 1), np.stack(test_cols, 1), "scorer(prompt+answer)"

    return ctx.memo("scorer", compute)
