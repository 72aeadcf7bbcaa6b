"""Stage 2 — SFT data: what the agent should say, per question and scenario (the paper's labels).

For every training question with competence p and every scenario α of the config:

    p < δ = 1 − α   →  target "I don't know!"                       (reject)
    otherwise       →  one of the agent's own correct samples      (answer: its own working, then the
                                                      template's final line "The answer is: X")

The paper's δ = 1 − α prices a reject as if the next agent were always right and cost one unit
more. `sft.labels.rule: successor` prices it with the real chain instead: answering earns
p − α·c, handing on earns the successor's p_next − α·c_next (its competence on the same
question, sampled the same way), so the target is a reject iff

    p < p_next − α·(c_next − c)

It rejects only what the successor can do and this agent cannot, and never where neither can
(being wrong cheaply beats being wrong dearly). Where neither can, the agent has no right answer
of its own to be taught: `sft.labels.unsolved: skip` (default) leaves the question out of that
scenario — measured live, the agent then still rejects much of what neither can, having only
ever been taught to reject it at low α; `attempt` teaches its own shortest wrong attempt —
measured live, that cost SmolLM2 7 points of forced accuracy (README, "The trained default");
`reference` teaches the reference answer alone, "The answer is: <gold>": the decision (try,
do not hand on) without a wrong working to imitate — measured live (round 3c), it stopped
rejecting what neither can at α = 0.8 and kept forced accuracy (README, "The trained default").
At serving time the agent still decides alone, from the query: the successor's competence only
shapes what it was taught.

asked with exactly the prompt serving sends (scenario instruction, reject offered, answer
template: `actors/engines/prompting.py`), so the agent learns to decide from the scenario it is
told. The paper balances answer and reject 50/50; we do it per scenario, by dropping examples
of the larger class (seeded), because data that is 90 % rejects teaches "always reject" rather
than "reject when unsure". By default the balance is pooled over the scenarios: dropping
examples uniformly keeps each scenario's own answer:reject ratio, which is the signal that tells
α = 0.2 from α = 0.8 (balanced per scenario, a weak agent's α = 0.2 data shrinks to the handful
of questions it is sure of). `balance: scenario` and `none` are the alternatives.

Beyond the paper, a `forced_share` of examples uses the terminal prompt (no reject offered) with
an own correct answer as target: LoRA changes the model everywhere, and these keep what a
terminal (or forced) agent answers as it was.

`sft.answer_tokens: n` cuts every answer target to its first n tokens, for a gate adapter whose
first step alone is read (`gate_lora:`): the loss then falls on the opening that decides, answer
or reject, rather than mostly on the working after it.

Written to `<out>/sft/dataset.jsonl` (TRL's conversational prompt-completion format) with
`<out>/sft/stats.json` beside it: counts per scenario and class, before and after balancing.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from disrouter.actors.decision import REJECT_PHRASE, scenario_instruction
from disrouter.actors.engine import EngineRequest
from disrouter.actors.engines.prompting import as_dicts, build_messages, cut_after_answer, extract_answer
from disrouter.training.config import TrainConfig
from disrouter.training.grading import NUMBER_RE, extract_choice, extract_number, parse_number
from disrouter.training.sampling import COMPETENCE_FILE, Competence, read_competence

DATASET_FILE = "dataset.jsonl"
STATS_FILE = "stats.json"


class Example(msgspec.Struct):
    """One SFT example in TRL's conversational prompt-completion form, plus what it is."""

    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]
    id: str
    alpha: float | None  # None: a forced (terminal-prompt) example
    label: str  # answer | reject
    p: float


def self_aware_messages(prompt: str, alpha: float) -> list[dict[str, str]]:
    """The chat messages a non-terminal agent is served with at cost weight α."""
    request = EngineRequest(query_id="", prompt=prompt, alpha=alpha, instruction=scenario_instruction(alpha))
    return as_dicts(build_messages(request))


def forced_messages(prompt: str) -> list[dict[str, str]]:
    """The chat messages a terminal (or forced) agent is served with."""
    return as_dicts(build_messages(EngineRequest(query_id="", prompt=prompt, alpha=0.0, allow_reject=False)))


def label(p: float, alpha: float) -> str:
    """The paper's SFT label: reject when the competence is below δ = 1 − α."""
    return "reject" if p < 1.0 - alpha else "answer"


def successor_label(p: float, alpha: float, p_next: float, cost_gap: float) -> str:
    """Reject iff handing on pays in expectation: p − α·c < p_next − α·c_next (cost_gap = c_next − c)."""
    return "reject" if p < p_next - alpha * cost_gap else "answer"


class Labeller:
    """The config's label rule over the training records: `labeller(record, α)` → answer | reject."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.rules = cfg.sft.labels
        self.next_p: dict[str, float] = {}
        self.fallback = 0.0
        self.missing: set[str] = set()
        if self.rules.rule == "successor":
            assert self.rules.successor is not None  # the config checks it
            path = Path(self.rules.successor).expanduser()
            path = path / COMPETENCE_FILE if path.is_dir() else path
            if not path.is_file():
                raise FileNotFoundError(f"sft.labels.successor: no competence cache at {path}")
            self.next_p = {key: record.p for key, record in read_competence(path).items()}
            if not self.next_p:
                raise ValueError(f"sft.labels.successor: {path} holds no questions")
            # A question the successor was not asked: its mean competence (counted in the stats).
            self.fallback = sum(self.next_p.values()) / len(self.next_p)

    def __call__(self, record: Competence, alpha: float) -> str:
        if self.rules.rule == "paper":
            return label(record.p, alpha)
        p_next = self.next_p.get(record.id)
        if p_next is None:
            self.missing.add(record.id)
            p_next = self.fallback
        assert self.rules.cost is not None and self.rules.successor_cost is not None
        return successor_label(record.p, alpha, p_next, self.rules.successor_cost - self.rules.cost)

    def describe(self) -> dict[str, Any]:
        if self.rules.rule == "paper":
            return {"rule": "reject iff p < 1 - alpha (paper, SFT stage)"}
        return {
            "rule": "reject iff p < p_next - alpha * (successor_cost - cost) (successor)",
            "successor": self.rules.successor,
            "cost": self.rules.cost,
            "successor_cost": self.rules.successor_cost,
            "successor_missing": len(self.missing),
            "successor_fallback_p": round(self.fallback, 4),
        }


def templated(reply: str, kind: str) -> str | None:
    """An own correct reply in the fixed answer template: its working, then "The answer is: X".

    A small model often states its result mid-sentence and rambles on ("…which is 40. This is a
    standard…"). The target keeps its own working up to the line that states the result (the
    grader's reading of the reply), then the template's final line, so SFT teaches the template
    and the stop, in the agent's own words.
    """
    reply = cut_after_answer(reply).strip()
    if extract_answer(reply) is not None:
        return reply
    if kind == "numeric":
        value = extract_number(reply)
        if value is None:
            return None
        # Up to the first line that ends its numbers on the result: the working, not the
        # restatements a small model piles up after it.
        working, kept = None, []
        for line in reply.split("\n"):
            kept.append(line)
            numbers = [parse_number(m.group(0)) for m in NUMBER_RE.finditer(line)]
            if numbers and numbers[-1] == value:
                working = "\n".join(kept)
                break
        if working is None:
            return None
        shown = str(value.numerator) if value.denominator == 1 else str(float(value))
    else:
        shown = extract_choice(reply)
        if shown is None:
            return None
        working = reply.split("\n", 1)[0]
    return f"{working.rstrip()}\nThe answer is: {shown}"


def _shortest(texts: list[str], kind: str) -> str | None:
    """The shortest of these replies in the answer template (None when none has a result).
    Ties go to the first in text order: the same data on every run (a set's order is not)."""
    candidates = {t for t in (templated(text, kind) for text in texts if text.strip()) if t is not None}
    return min(candidates, key=lambda t: (len(t), t), default=None)


def own_answer(record: Competence) -> str | None:
    """One of the agent's own correct replies, templated (None when it never got it right)."""
    # The shortest: the least rambling of its own right answers, and the cheapest to train on.
    return _shortest([text for text, ok in zip(record.samples, record.correct) if ok], record.kind)


def own_attempt(record: Competence) -> str | None:
    """The agent's own shortest templated reply, right or not (None when no reply has a result).

    The target where the successor rule says "answer" but the agent was never right: neither
    agent can, so the best it can do is try cheaply. Its own attempt teaches the decision (try,
    don't hand on) and nothing it would not have said; a right answer it never gave would teach
    arithmetic it cannot do.
    """
    return _shortest(record.samples, record.kind)


def reference_answer(record: Competence) -> str:
    """The data set's own answer in the template, no working: the target where neither agent can
    and `sft.labels.unsolved: reference`. It teaches "try" and the stop; the number is right,
    whether or not the agent could have worked it out."""
    return f"The answer is: {record.gold}"


# `sft.labels.unsolved`: the answer target where the agent was never right (None: no example).
UNSOLVED_TARGETS: dict[str, Callable[[Competence], str | None]] = {
    "skip": lambda record: None,
    "attempt": own_attempt,
    "reference": reference_answer,
}


def _example(record: Competence, alpha: float | None, target: str, kind: str) -> Example:
    messages = forced_messages(record.prompt) if alpha is None else self_aware_messages(record.prompt, alpha)
    return Example(messages, [{"role": "assistant", "content": target}], record.id, alpha, kind, record.p)


def token_cut(tokenizer: Any, n: int) -> Callable[[str], str]:
    """A target's first n tokens of this tokenizer (`sft.answer_tokens`)."""

    def cut(text: str) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= n else tokenizer.decode(ids[:n])

    return cut


def build_examples(cfg: TrainConfig, records: list[Competence],
                   tokenizer: Any = None) -> tuple[list[Example], dict[str, Any]]:
    """The SFT examples and their statistics (see the module doc). With `sft.answer_tokens`,
    the model's `tokenizer` cuts every answer target (rejects are short already)."""
    n = cfg.sft.answer_tokens
    if n is not None and tokenizer is None:
        raise ValueError("sft.answer_tokens: cutting answer targets needs the model's tokenizer")
    shorten = token_cut(tokenizer, n) if n is not None else (lambda text: text)
    rng = random.Random(cfg.seed)
    labeller = Labeller(cfg)
    train = sorted((r for r in records if r.split == "train"), key=lambda r: r.id)
    answers: list[Example] = []
    rejects: list[Example] = []
    never_right = 0  # answers where the agent was never right (successor rule, neither agent can)
    for alpha in cfg.sft.alphas:
        for record in train:
            if labeller(record, alpha) == "reject":
                rejects.append(_example(record, alpha, REJECT_PHRASE, "reject"))
            else:
                # The paper's rule answers only where some sample was right (p ≥ 1 − α > 0); the
                # successor rule also where neither agent can: then nothing, the agent's own
                # attempt or the reference answer (`sft.labels.unsolved`).
                text = own_answer(record) or UNSOLVED_TARGETS[cfg.sft.labels.unsolved](record)
                if text is not None:
                    answers.append(_example(record, alpha, shorten(text), "answer"))
                    never_right += record.p == 0
    before = _per_alpha(answers + rejects)
    ratio = cfg.sft.balance_ratio
    if cfg.sft.balance == "pooled" and answers and rejects:
        # Drop examples of the larger class uniformly across scenarios: the classes come out
        # 50/50 (or `balance_ratio`) while each scenario keeps its own answer:reject ratio (what
        # tells α apart).
        answers, rejects = _bounded(answers, rejects, ratio, rng)
    elif cfg.sft.balance == "scenario":
        answers, rejects = _balance_per_scenario(answers, rejects, ratio, rng)
    examples = answers + rejects
    after = _per_alpha(examples)
    per_alpha = {a: {**{f"{k}_before": v for k, v in before.get(a, {}).items()}, **after.get(a, {})} for a in before}

    forced = []
    if cfg.sft.forced_share > 0:
        solvable = [r for r in train if any(r.correct)]
        want = round(cfg.sft.forced_share / (1.0 - cfg.sft.forced_share) * len(examples))
        for record in rng.sample(solvable, min(want, len(solvable))):
            forced.append(_example(record, None, shorten(own_answer(record) or ""), "answer"))
    examples += forced
    rng.shuffle(examples)
    if cfg.sft.max_examples is not None:
        examples = examples[: cfg.sft.max_examples]
    stats = {
        "questions": len(train),
        "examples": len(examples),
        "per_alpha": per_alpha,
        "forced": len(forced),
        "labels": dict(Counter(e.label for e in examples)),
        "competence_mean": round(sum(r.p for r in train) / len(train), 4) if train else None,
        **labeller.describe(),
        "answers_never_right": never_right,
        "balance": cfg.sft.balance,
        "balance_ratio": cfg.sft.balance_ratio,
        "answer_tokens": cfg.sft.answer_tokens,
    }
    return examples, stats


def _per_alpha(examples: list[Example]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for e in examples:
        counts = out.setdefault(f"{e.alpha:g}", {"answer": 0, "reject": 0})
        counts[e.label] += 1
    return out


def _bounded(answers: list[Example], rejects: list[Example], ratio: float, rng: random.Random):
    """Both classes, the larger cut (seeded) to at most `ratio` times the smaller."""
    cap = max(1, round(ratio * min(len(answers), len(rejects))))
    return rng.sample(answers, min(cap, len(answers))), rng.sample(rejects, min(cap, len(rejects)))


def _balance_per_scenario(answers: list[Example], rejects: list[Example], ratio: float, rng: random.Random):
    """Balanced within every scenario (a scenario with few answers then gets few examples); a
    scenario with one class only keeps it whole."""
    kept_a, kept_r = [], []
    for alpha in sorted({e.alpha for e in answers + rejects}):
        a = [e for e in answers if e.alpha == alpha]
        r = [e for e in rejects if e.alpha == alpha]
        # One class only: kept whole (shuffled as before, so a seed draws the same examples).
        a, r = _bounded(a, r, ratio, rng) if a and r else (rng.sample(a, len(a)), rng.sample(r, len(r)))
        kept_a += a
        kept_r += r
    return kept_a, kept_r


def write_examples(folder: Path, examples: list[Example], stats: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DATASET_FILE
    encoder = msgspec.json.Encoder()
    with path.open("wb") as fh:
        for example in examples:
            fh.write(encoder.encode(example) + b"\n")
    (folder / STATS_FILE).write_bytes(msgspec.json.format(msgspec.json.encode(stats), indent=2) + b"\n")
    return path


def read_examples(path: Path) -> list[Example]:
    decoder = msgspec.json.Decoder(Example)
    with path.open("rb") as fh:
        return [decoder.decode(line) for line in fh if line.strip()]
