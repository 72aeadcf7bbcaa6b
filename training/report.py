"""Stage 6 — the self-awareness report: does the trained agent know what it knows?

On the held-out questions (never trained on), served through the vLLM engine exactly as a
topology would serve them (greedy, the same prompts, the adapter through vLLM's LoRA support):

- forced accuracy before (base) and after (adapter), asked with the terminal prompt: training
  must not change what the agent knows (the paper: < 1 point), only whether it says so;
- per α (the three scenarios and the points between them):
    answer rate, accuracy when answering,
    F1 of "answer" against the agent's own correctness (its forced greedy answer is right) —
    the definition `disrouter eval` uses for self-awareness — and against its own competence
    (p > (1 − α)^γ, the decision the RL reward makes optimal, with p the fraction right of N
    samples of that same model on that question);
- the same for the references, each scored against the model it decides for: the untrained
  model's confidence rule (its answer's probability > (1 − α)^γ, the default before training)
  against the untrained model, and a MiniLM probe (a logistic regression from the prompt's
  embedding to the agent's correctness: a learned router's view of this one agent) fitted on the
  trained model's own competence on the validation questions and scored against the trained
  model — the router a user would fit for the agent as deployed. It is fitted on validation
  questions, not the training mix: the trained model was fitted on the training mix, so its
  competence there may be inflated and is not what a router of the deployed agent sees. Where the
  run's competence cache is the base model's (no `sample.adapter`), a probe of the base model,
  fitted on that cache's training mix, is reported too.
- the reject's first-step probability: how well it ranks the agent's correctness (AUC), and
  the decisions "answer iff it is below ½" and "below a `reject_at` per α fitted on the same
  validation questions to the agent's own expected reward" (what a served threshold does).

"Own" is literal: the trained rows are scored against the trained model's competence, sampled
on the held-out questions through the served adapter (`report/competence-<adapter sha>.jsonl`),
not against the model the training labels were sampled from — training changes what the agent
can do (SFT on its own correct workings lifts its accuracy), and a decision is right or wrong
about the agent that makes it.

Writes `<out>/report/report.json`, `report.md` (the table) and `answer_rate.png`.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import structlog
from tqdm import tqdm

from disrouter.actors.decision import is_reject, reject_threshold, scenario_instruction
from disrouter.actors.engine import EngineRequest
from disrouter.evaluation.metrics import decision_f1
from disrouter.training.calibrate import best_threshold
from disrouter.training.config import TrainConfig
from disrouter.training.data import Item
from disrouter.training.grading import is_correct
from disrouter.training.mix import max_tokens_for
from disrouter.training.sampling import Competence, sample_competence

log = structlog.get_logger("disrouter.training")

REPORT_ALPHAS = (0.2, 0.35, 0.5, 0.65, 0.8)


@dataclass
class Replies:
    """One engine's greedy replies on the held-out questions."""

    forced_correct: np.ndarray  # (n,) bool
    confidence: np.ndarray  # (n,) float, NaN where none
    answered: dict[float, np.ndarray] = field(default_factory=dict)  # α → (n,) bool
    correct: dict[float, np.ndarray] = field(default_factory=dict)  # α → (n,) bool (False if rejected)
    reject_tokens: list[int] = field(default_factory=list)  # generated tokens of each reject
    # α → (n,) probability that the reply starts the reject (engines that can say; else absent)
    reject_mass: dict[float, np.ndarray] = field(default_factory=dict)


@dataclass
class Measurement:
    """One model as the report measured it: its replies on the held-out questions, its own
    competence there (None: the run's cache already is its), and, for the trained model, its
    own competence and its reject probability per α on the validation questions."""

    replies: Replies
    p: np.ndarray | None = None
    validation: list[Competence] = field(default_factory=list)
    validation_mass: dict[float, np.ndarray] = field(default_factory=dict)


def request_for(item: Item | Competence, alpha: float | None, cfg: TrainConfig, *, confidence: bool = False) -> EngineRequest:
    """A question as the report asks it: forced (α None: the terminal prompt, no reject offered)
    or self-aware at α (the scenario's instruction, the reject offered), as a topology serves it."""
    return EngineRequest(
        query_id=f"{item.id}@{alpha}",
        prompt=item.prompt,
        alpha=alpha if alpha is not None else 0.0,
        instruction=scenario_instruction(alpha) if alpha is not None else None,
        allow_reject=alpha is not None,
        want_confidence=confidence and alpha is None,
        max_tokens=max_tokens_for(cfg, item.task),
    )


async def collect(engine: Any, items: list[Competence], cfg: TrainConfig, alphas: tuple[float, ...], *,
                  confidence: bool, label: str, concurrency: int = 32) -> Replies:
    """Forced replies (with confidence when asked) and, per α, self-aware replies."""
    semaphore = asyncio.Semaphore(concurrency)
    n = len(items)
    replies = Replies(np.zeros(n, bool), np.full(n, np.nan))
    first_token = getattr(engine, "reject_probability", None)
    for alpha in alphas:
        replies.answered[alpha] = np.zeros(n, bool)
        replies.correct[alpha] = np.zeros(n, bool)
        if first_token is not None:
            replies.reject_mass[alpha] = np.full(n, np.nan)
    bar = tqdm(total=n * (1 + len(alphas)), desc=f"report {label}", unit="reply")

    async def one(i: int, alpha: float | None) -> None:
        item = items[i]
        request = request_for(item, alpha, cfg, confidence=confidence)
        async with semaphore:
            result = await engine.generate(request)
            if alpha is not None and first_token is not None:
                replies.reject_mass[alpha][i] = await first_token(request)
        right = is_correct(item.kind, result.text, item.gold)
        if alpha is None:
            replies.forced_correct[i] = right
            if result.confidence is not None:
                replies.confidence[i] = result.confidence
        else:
            rejected = result.decision == "reject" or is_reject(result.text)
            replies.answered[alpha][i] = not rejected
            replies.correct[alpha][i] = right and not rejected
            if rejected:
                replies.reject_tokens.append(result.tokens_out)
        bar.update(1)

    try:
        await asyncio.gather(*(one(i, a) for i in range(n) for a in (None, *alphas)))
    finally:
        bar.close()
    return replies


async def reject_masses(engine: Any, items: list[Item], cfg: TrainConfig, alphas: tuple[float, ...],
                        concurrency: int = 32) -> dict[float, np.ndarray]:
    """Per α, the first-step probability of the reject on each question (one prefill each, no
    generation): what a served `reject_at` threshold is put on."""
    semaphore = asyncio.Semaphore(concurrency)
    masses = {alpha: np.full(len(items), np.nan) for alpha in alphas}
    bar = tqdm(total=len(items) * len(alphas), desc="reject probability (validation)", unit="q")

    async def one(i: int, alpha: float) -> None:
        async with semaphore:
            masses[alpha][i] = await engine.reject_probability(request_for(items[i], alpha, cfg))
        bar.update(1)

    try:
        await asyncio.gather(*(one(i, a) for i in range(len(items)) for a in alphas))
    finally:
        bar.close()
    return masses


def fit_reject_at(mass: np.ndarray, p: np.ndarray, alpha: float, gamma: float, grid: list[float]) -> float:
    """The `reject_at` of `grid` that maximises the agent's own expected reward on validation
    questions, the RL reward's: answering earns its competence p there, rejecting (1 − α)^γ —
    the agent alone, as this report sees it (`disrouter train calibrate` fits the same
    threshold against the utility of the chain it serves in)."""
    grid = sorted(grid)
    keep = reject_threshold(alpha, gamma)
    curve = [float(np.where(mass < t, p, keep).mean()) for t in grid]
    return grid[best_threshold(grid, curve)]


def fitted_reject_at(model: Measurement, cfg: TrainConfig) -> dict[float, float]:
    """Per α, `fit_reject_at` on the model's validation questions (none without its masses)."""
    p = np.asarray([r.p for r in model.validation])
    return {alpha: fit_reject_at(mass, p, alpha, cfg.rl.gamma, cfg.calibrate.grid)
            for alpha, mass in model.validation_mass.items()}


def competence_cache(folder: Path, adapter: Path | None) -> Path:
    """Where one model's held-out competence is cached: named by the adapter's weights, so a
    report on another adapter samples afresh instead of reading an older model's."""
    if adapter is None:
        return folder / "competence-base.jsonl"
    digest = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()[:12]
    return folder / f"competence-{digest}.jsonl"


async def own_competence(engine: Any, items: list[Item], cfg: TrainConfig, path: Path, label: str) -> dict[str, Competence]:
    """Each question's competence for the model `engine` serves: N replies drawn as the sample
    stage draws them (same n, temperature, prompt), graded; cached and resumable."""
    records = await sample_competence(cfg, items, engine=engine, path=path, label=label)
    return {item.id: records[item.id] for item in items}


def p_of(records: dict[str, Competence], questions: list[Competence]) -> np.ndarray:
    return np.asarray([records[r.id].p for r in questions])


def f1(decision: np.ndarray, truth: np.ndarray) -> float | None:
    value = decision_f1(decision, truth)
    return None if value is None else round(value, 4)


def competent(p: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """Where answering is the better bet by the agent's own competence: p > (1 − α)^γ."""
    return p > reject_threshold(alpha, gamma)


def scenario_row(answered: np.ndarray, correct: np.ndarray, forced_correct: np.ndarray, p: np.ndarray,
                 alpha: float, gamma: float) -> dict[str, Any]:
    optimal = competent(p, alpha, gamma)
    return {
        "alpha": alpha,
        "answer_rate": round(float(answered.mean()), 4),
        "accuracy_when_answering": round(float(correct[answered].mean()), 4) if answered.any() else None,
        "f1_correct": f1(answered, forced_correct),
        "f1_competence": f1(answered, optimal),
        "optimal_answer_rate": round(float(optimal.mean()), 4),
    }


def auc(score: np.ndarray | None, right: np.ndarray) -> float | None:
    """How well a score ranks the agent's own correctness, whatever threshold a rule puts on it
    (area under the ROC curve: 1 knows exactly, 0.5 is chance); None where it cannot tell."""
    from sklearn.metrics import roc_auc_score

    if score is None:
        return None
    known = ~np.isnan(score)
    if not right[known].any() or right[known].all():
        return None
    return round(float(roc_auc_score(right[known], score[known])), 4)


def mass_row(mass: np.ndarray, forced_correct: np.ndarray, optimal: np.ndarray | None = None,
             fitted: float | None = None) -> dict[str, Any]:
    """What the reject's first-token probability knows: how well it ranks the agent's own
    correctness (AUC), and the decision "answer iff it is below ½" (`reject_at: 0.5`), against
    its correctness and, given where answering is optimal, its competence; the same for a
    threshold fitted on validation questions (`fitted`), where there is one."""
    row = {
        "reject_mass_median": round(float(np.median(mass)), 4),
        "reject_mass_auc": auc(-mass, forced_correct),
    } | _threshold_columns(mass, 0.5, forced_correct, optimal, "mass")
    if fitted is not None:
        row |= {"reject_at_fitted": fitted} | _threshold_columns(mass, fitted, forced_correct, optimal, "fitted")
    return row


def _threshold_columns(mass: np.ndarray, threshold: float, forced_correct: np.ndarray, optimal: np.ndarray | None,
                       suffix: str) -> dict[str, Any]:
    """The decision "answer iff the reject's probability is below `threshold`": its answer rate
    and its F1 against correctness and (given where answering is optimal) competence."""
    answered = mass < threshold
    return {
        f"answer_rate_{suffix}": round(float(answered.mean()), 4),
        f"f1_correct_{suffix}": f1(answered, forced_correct),
    } | ({f"f1_competence_{suffix}": f1(answered, optimal)} if optimal is not None else {})


def rule_rows(p_hat: np.ndarray, forced_correct: np.ndarray, p: np.ndarray, alphas, gamma: float) -> list[dict[str, Any]]:
    """A threshold rule on a probability (confidence, or a probe's p̂) at every α."""
    rows = []
    for alpha in alphas:
        answered = np.nan_to_num(p_hat, nan=0.0) > reject_threshold(alpha, gamma)
        rows.append(scenario_row(answered, answered & forced_correct, forced_correct, p, alpha, gamma))
    return rows


def minilm_probe(train: list[Competence], test: list[Competence], seed: int) -> np.ndarray:
    """P̂(this agent is right) on `test`, from the prompt's MiniLM embedding, fitted on the
    agent's sampled competence on `train` (questions of the model the probe is a router for)."""
    from sklearn.linear_model import LogisticRegression

    from disrouter.evaluation.embed import make_embedder

    embedder = make_embedder("minilm", Path(".disrouter/cache/embeddings"))
    x_train = embedder.encode([r.prompt for r in train])
    x_test = embedder.encode([r.prompt for r in test])
    # One row per sample: the probe learns the sampled competence, not a coin flip of it.
    rows = np.repeat(np.arange(len(train)), [r.n for r in train])
    y = np.concatenate([np.asarray(r.correct, float) for r in train]) > 0.5
    if y.all() or not y.any():
        return np.full(len(test), float(y.mean()))
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x_train[rows], y)
    return model.predict_proba(x_test)[:, 1]


def build_report(cfg: TrainConfig, test: list[Competence], base: Replies, trained: Replies,
                 probe: np.ndarray | None, alphas=REPORT_ALPHAS, *, base_p: np.ndarray | None = None,
                 trained_p: np.ndarray | None = None, base_probe: np.ndarray | None = None,
                 reject_at: dict[float, float] | None = None) -> dict[str, Any]:
    """`base_p` / `trained_p`: each model's own competence on the held-out questions; where one
    is not given, the competence the questions were sampled with (`test`) stands in for it.
    `probe`: a MiniLM probe's P̂ for the trained model, scored against it; `base_probe`: one for
    the base model, scored against the base. `reject_at`: per α, a threshold on the reject's
    probability fitted on validation questions (`fit_reject_at`)."""
    gamma = cfg.rl.gamma
    p = np.asarray([r.p for r in test]) if base_p is None else base_p
    p_trained = p if trained_p is None else trained_p
    trained_rows = [
        scenario_row(trained.answered[a], trained.correct[a], trained.forced_correct, p_trained, a, gamma)
        | (mass_row(trained.reject_mass[a], trained.forced_correct, competent(p_trained, a, gamma),
                    (reject_at or {}).get(a))
           if a in trained.reject_mass else {})
        for a in alphas
    ]
    levels: dict[str, dict[str, Any]] = {}
    for key in sorted({f"{r.task}/{r.level}" if r.level else r.task for r in test}):
        mask = np.asarray([(f"{r.task}/{r.level}" if r.level else r.task) == key for r in test])
        levels[key] = {
            "n": int(mask.sum()),
            "competence": round(float(p[mask].mean()), 4),
            "competence_after": round(float(p_trained[mask].mean()), 4),
            "forced_accuracy_before": round(float(base.forced_correct[mask].mean()), 4),
            "forced_accuracy_after": round(float(trained.forced_correct[mask].mean()), 4),
            "answer_rate": {f"{a:g}": round(float(trained.answered[a][mask].mean()), 4) for a in alphas},
        }
    reject_tokens = trained.reject_tokens
    report = {
        "agent": cfg.agent,
        "model": cfg.model,
        "questions": len(test),
        "gamma": gamma,
        "forced_accuracy": {
            "before": round(float(base.forced_correct.mean()), 4),
            "after": round(float(trained.forced_correct.mean()), 4),
        },
        # Mean sampled competence; "trained_sampled": False where the trained rows had to be
        # scored against the competence the questions were sampled with instead of their own.
        "competence": {
            "before": round(float(p.mean()), 4),
            "after": round(float(p_trained.mean()), 4),
            "trained_sampled": trained_p is not None,
        },
        "trained": trained_rows,
        "untrained_confidence_rule": rule_rows(base.confidence, base.forced_correct, p, alphas, gamma)
        if not np.isnan(base.confidence).all()
        else None,
        "minilm_probe_rule": rule_rows(probe, trained.forced_correct, p_trained, alphas, gamma)
        if probe is not None
        else None,
        "minilm_probe_base_rule": rule_rows(base_probe, base.forced_correct, p, alphas, gamma)
        if base_probe is not None
        else None,
        # How well each reference ranks the correctness of the model it decides for.
        "auc": {"untrained_confidence": auc(base.confidence, base.forced_correct),
                "minilm_probe": auc(probe, trained.forced_correct),
                "minilm_probe_base": auc(base_probe, base.forced_correct)},
        "median_reject_tokens": float(np.median(reject_tokens)) if reject_tokens else None,
        "levels": levels,
    }
    report["table"] = table(report)
    return report


def _fmt(value: Any) -> str:
    return "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def _series(rows: list[dict[str, Any]], key: str) -> str:
    return " / ".join(_fmt(row.get(key)) for row in rows)


def table(report: dict[str, Any]) -> str:
    fa = report["forced_accuracy"]
    comp = report.get("competence") or {}
    lines = [
        f"Held-out questions: {report['questions']}. Forced accuracy (terminal prompt, greedy): "
        f"before {fa['before']:.3f}, after {fa['after']:.3f}. Sampled competence: before "
        f"{_fmt(comp.get('before'))}, after {_fmt(comp.get('after'))}"
        f"{'' if comp.get('trained_sampled', True) else ' (not sampled after training: the before column stands in)'}. "
        f"Median tokens of a reject: {_fmt(report['median_reject_tokens'])}.",
        "",
        "F1 of the decision \"answer\", each against the model it decides for: against that model's correctness "
        "(its forced greedy answer is right) and its competence (answering is optimal, p > (1 − α)^γ). The "
        "untrained confidence rule decides for the base model; the MiniLM probe, fitted on the trained model's "
        "competence on validation questions, for the trained model.",
        "",
        "| α | answer rate | acc. when answering | F1 correctness: trained | untrained confidence rule | "
        "MiniLM probe | F1 competence: trained | untrained confidence rule | MiniLM probe |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    conf = report.get("untrained_confidence_rule") or [{}] * len(report["trained"])
    probe = report.get("minilm_probe_rule") or [{}] * len(report["trained"])
    for row, c, m in zip(report["trained"], conf, probe):
        lines.append(
            f"| {row['alpha']:g} | {_fmt(row['answer_rate'])} | {_fmt(row['accuracy_when_answering'])} | "
            f"{_fmt(row['f1_correct'])} | {_fmt(c.get('f1_correct'))} | {_fmt(m.get('f1_correct'))} | "
            f"{_fmt(row['f1_competence'])} | {_fmt(c.get('f1_competence'))} | {_fmt(m.get('f1_competence'))} |"
        )
    if all("reject_mass_auc" in row for row in report["trained"]):
        lines += [
            "",
            "The reject's first-token probability (greedy decoding rejects only when that token is the "
            "single likeliest):",
            "",
            "| α | median P(reject) | AUC for own correctness | answer rate, P(reject) < ½ | F1 correctness, "
            "P(reject) < ½ | F1 competence, P(reject) < ½ |",
            "|---|---|---|---|---|---|",
        ]
        refs = report.get("auc") or {}
        for row in report["trained"]:
            lines.append(f"| {row['alpha']:g} | {_fmt(row['reject_mass_median'])} | {_fmt(row['reject_mass_auc'])} | "
                         f"{_fmt(row['answer_rate_mass'])} | {_fmt(row['f1_correct_mass'])} | "
                         f"{_fmt(row.get('f1_competence_mass'))} |")
        if all("reject_at_fitted" in row for row in report["trained"]):
            lines += [
                "",
                "The same with `reject_at` fitted per α on the validation questions (the threshold that "
                "maximises the agent's own expected reward there: its competence where it answers, (1 − α)^γ "
                "where it rejects):",
                "",
                "| α | reject_at | answer rate | F1 correctness | F1 competence |",
                "|---|---|---|---|---|",
            ]
            lines += [f"| {row['alpha']:g} | {_fmt(row['reject_at_fitted'])} | {_fmt(row['answer_rate_fitted'])} | "
                      f"{_fmt(row['f1_correct_fitted'])} | {_fmt(row.get('f1_competence_fitted'))} |"
                      for row in report["trained"]]
        lines += ["", f"AUC of the references, each for its own model's correctness: untrained confidence "
                      f"{_fmt(refs.get('untrained_confidence'))} (base), MiniLM probe {_fmt(refs.get('minilm_probe'))} "
                      f"(trained)."]
    base_probe = report.get("minilm_probe_base_rule")
    if base_probe:
        lines += ["", f"MiniLM probe of the base model (fitted on the training mix, scored against the base): F1 "
                      f"correctness {_series(base_probe, 'f1_correct')}, F1 competence "
                      f"{_series(base_probe, 'f1_competence')}; AUC "
                      f"{_fmt((report.get('auc') or {}).get('minilm_probe_base'))}."]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    series = [("trained (generative)", report["trained"], "o-"),
              ("untrained confidence rule", report.get("untrained_confidence_rule"), "s--"),
              ("MiniLM probe rule (trained model)", report.get("minilm_probe_rule"), "^:")]
    for name, rows, style in series:
        if rows:
            ax.plot([r["alpha"] for r in rows], [r["answer_rate"] for r in rows], style, label=name)
    ax.plot([r["alpha"] for r in report["trained"]], [r["optimal_answer_rate"] for r in report["trained"]], "k-",
            alpha=0.4, label="optimal for the trained model (p > (1-α)^γ)")
    ax.set_xlabel("cost weight α")
    ax.set_ylabel("answer rate (held out)")
    ax.set_title(f"{report['agent']}: answer rate against α")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(report: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "report.json", folder / "report.md", folder / "answer_rate.png"]
    paths[0].write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    paths[1].write_text(f"# Self-awareness of {report['agent']}\n\n{report['table']}\n")
    plot(report, paths[2])
    return paths
