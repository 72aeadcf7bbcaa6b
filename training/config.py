"""One training run, one config file: what `disrouter train <stage> CONFIG.yaml` reads.

    agent: smollm2                      # the name the card and the report use
    model: smollm2-135m-instruct        # model-store id, folder, or Hugging Face id (GPU)
    out: runs/smollm2                   # every stage writes under this folder (resumable)
    data:  {sets: [{name: arith, limit: 3000}], train_fraction: 0.3, seed: 0, eval_questions: 300}
    sample: {n: 8, temperature: 0.7}
    sft:   {alphas: [0.2, 0.5, 0.8], lora: {r: 16}, epochs: 2, learning_rate: 2.0e-4}
    rl:    {prompts: 120, num_generations: 6, gamma: 0.5}
    device: auto                        # cpu | cuda | auto; the dtype follows (see below)

Nothing in the recipe is CPU-specific: the same file trains on a GPU by `device: cuda` (or
auto) and bigger numbers. `dtype: auto` means float32 on a CPU without native bf16 (measured
~3× faster than emulated bf16 on this AVX2 machine) and bf16 on CUDA.

Every field has a default and unknown keys are errors that name the key, like a topology.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from disrouter.actors.decision import DEFAULT_GAMMA


class ConfigError(ValueError):
    """A training config is missing, unreadable, or has a bad field (the message names it)."""


class DataSet(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str  # arith | gsm8k | mmlu
    limit: int | None = None  # first n questions of the set
    # Leave out the first n of those (after `limit`): a second entry of the same set can then
    # add fresh questions beyond the ones an earlier entry, its validation questions and an
    # evaluation's range already use (ids stay the set's own, so nothing is asked twice).
    skip: int = 0
    # Sampling budget for this set's replies: arithmetic needs a few lines, GSM8K a paragraph.
    max_tokens: int = 192
    levels: list[str] = []  # arith only: keep these difficulty levels (default: all)
    # Override the run's train_questions / eval_questions for this set.
    train_questions: int | None = None
    eval_questions: int | None = None


class DataConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    sets: list[DataSet] = msgspec.field(default_factory=lambda: [DataSet("arith", limit=3000, max_tokens=160)])
    train_fraction: float = 0.3
    seed: int = 0
    # Training questions per set (first n of the set's train split; None = all of it).
    train_questions: int | None = None
    # Held-out questions per set for the self-awareness report (first n of the test split).
    eval_questions: int = 300


class SampleConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    n: int = 8  # samples per question: the competence p = fraction correct
    temperature: float = 0.7
    top_p: float = 1.0
    concurrency: int = 16  # questions in flight at once (each with n samples)
    # Measure competence with an earlier round's adapter on the base model (a folder, or
    # pkg:<package>/<folder>) instead of the base alone. SFT on the paper's labels also teaches
    # the model its own shortest correct workings, so the trained model solves more than the
    # base did (SmolLM2: greedy 0.21 → 0.32) and labels from the base's competence say "reject"
    # where it would now be right. A second round labels with the first round's competence and
    # trains from the base again (training/recipes/smollm2.yaml).
    adapter: str | None = None


class LoraConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


class LabelConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Which rule turns competence into SFT targets (training/labels.py says what each does)."""

    # paper: reject iff p < 1 − α. successor: reject iff handing the question on pays in
    # expectation, p − α·cost < p_next − α·successor_cost, with p_next the successor's
    # competence on the same question.
    rule: Literal["paper", "successor"] = "paper"
    # The successor's competence cache (a `disrouter train sample` out folder or its
    # competence.jsonl) on this config's training questions; the costs are the topology's.
    successor: str | None = None
    cost: float | None = None
    successor_cost: float | None = None
    # Where the successor rule says "answer" but the agent was never right (neither agent can):
    # skip the question, teach the agent's own wrong attempt, or teach the reference answer
    # alone ("The answer is: <gold>"). Measured live (README): the attempts cost SmolLM2 7 points
    # of forced accuracy, and skipping left it rejecting what neither agent can; skip is the default.
    unsolved: Literal["skip", "attempt", "reference"] = "skip"


class SFTConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    alphas: list[float] = msgspec.field(default_factory=lambda: [0.2, 0.5, 0.8])  # the paper's scenarios: one labelled copy each
    # Share of examples asked with the terminal prompt (no reject offered), target = an own
    # correct answer: keeps the forced answers a terminal agent gives as they were.
    forced_share: float = 0.15
    # answer/reject 50/50 (the paper's balancing): pooled over scenarios, per scenario, or none
    balance: Literal["pooled", "scenario", "none"] = "pooled"
    # The larger class is cut to at most this many times the smaller (1: the paper's 50/50). A
    # strong agent's natural labels are mostly answers: 50/50 taught Qwen a 50 % reject prior,
    # none taught it never to reject (README, "What training bought").
    balance_ratio: float = 1.0
    labels: LabelConfig = msgspec.field(default_factory=LabelConfig)
    max_examples: int | None = None
    # Cut every answer target to its first n tokens (None: whole). For a gate (`gate_lora:`),
    # whose first step alone is read: the loss then falls on the opening that decides, not on
    # the working after it, where a whole answer puts most of it. The adapter learns to stop
    # after n tokens, so it must not answer (`lora:`).
    answer_tokens: int | None = None
    lora: LoraConfig = msgspec.field(default_factory=LoraConfig)
    epochs: float = 2.0
    learning_rate: float = 2.0e-4
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    warmup_ratio: float = 0.05
    save_steps: int = 25


class RLConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    prompts: int = 120  # training prompts (questions × a drawn α)
    alphas: list[float] = msgspec.field(default_factory=lambda: [0.2, 0.5, 0.8])  # α is drawn per prompt from these
    gamma: float = DEFAULT_GAMMA  # reject reward (1 − α)^γ
    num_generations: int = 6  # GRPO group size
    max_completion_length: int = 160
    temperature: float = 0.9
    learning_rate: float = 5.0e-5
    beta: float = 0.0  # KL weight; 0 needs no reference model (TRL's default)
    # "none" (Dr. GRPO): advantages are reward − group mean, so an update is as large as the
    # reward difference it follows. TRL's default "group" divides by the group's std, which
    # turns a 0.1 gap (a right answer vs a reject at α = 0.2) into a full ±1σ push to answer.
    scale_rewards: Literal["none", "group", "batch"] = "none"
    batch_size: int = 12  # completions per step (a multiple of num_generations)
    grad_accum: int = 1
    # Half the prompts where answering is optimal (p > (1 − α)^γ), half where rejecting is
    # (training/rl.py says why); off: questions and α as they come.
    balance_decisions: bool = True
    save_steps: int = 10
    # "sampled": each rollout is graded (1 right, 0 wrong). "expected": an answer earns the
    # question's sampled competence p instead, its expected reward, so only the opening decision
    # is learned, free of one sample's luck, and a rollout needs only the tokens that show the
    # decision (a short `max_completion_length`). Meant for a gate (`gate_lora:`), with
    # competence sampled through the adapter that answers for it (`sample.adapter`); on the
    # default's gate it made the ranking worse (README, "A gate adapter", item 7).
    reward: Literal["sampled", "expected"] = "sampled"
    # The adapter RL trains further (a folder, or pkg:<package>/<folder>); default: this run's SFT
    # adapter, after the SFT stage.
    start: str | None = None


class CalibrateConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """`disrouter train calibrate`: per-scenario reject thresholds (training/calibrate.py)."""

    # The topology that serves the agent: its engine block (adapter included) and its successor.
    topology: str | None = None
    # Validation questions per set: the next n of the train split after the training mix (the
    # report fits its probe of the trained model on them too).
    questions: int = 300
    # Candidate thresholds on the reject's first-step probability.
    grid: list[float] = msgspec.field(default_factory=lambda: [round(0.05 * k, 2) for k in range(1, 21)])
    concurrency: int = 16


class TrainConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    agent: str
    model: str
    out: str
    data: DataConfig = msgspec.field(default_factory=DataConfig)
    sample: SampleConfig = msgspec.field(default_factory=SampleConfig)
    sft: SFTConfig = msgspec.field(default_factory=SFTConfig)
    rl: RLConfig = msgspec.field(default_factory=RLConfig)
    calibrate: CalibrateConfig = msgspec.field(default_factory=CalibrateConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = 0
    # vLLM engine options for sampling and the report (max_model_len, env, …); the same keys
    # as a topology's `engine:` block.
    engine: dict[str, Any] = {}
    # Where the final adapter and its card go (default: <out>/adapter).
    export_to: str | None = None
    # Which stage's adapter the report measures and the export ships: "rl" (the SFT adapter when
    # RL did not run) or "sft" — for when the held-out report shows RL did not improve on SFT
    # (the training cost on the card still counts every stage that ran).
    ship: Literal["rl", "sft"] = "rl"

    @property
    def out_dir(self) -> Path:
        return Path(self.out).expanduser()

    def __post_init__(self) -> None:
        if self.sample.n < 1:
            raise ValueError("sample.n must be ≥ 1")
        if self.rl.batch_size % self.rl.num_generations:
            raise ValueError("rl.batch_size must be a multiple of rl.num_generations")
        if not all(0.0 <= a <= 1.0 for a in [*self.sft.alphas, *self.rl.alphas]):
            raise ValueError("every α (sft.alphas, rl.alphas) must lie in [0, 1]")
        if not all(0.0 < t <= 1.0 for t in self.calibrate.grid) or not self.calibrate.grid:
            raise ValueError("calibrate.grid: thresholds within (0, 1], at least one")
        if self.sft.balance_ratio < 1.0:
            raise ValueError("sft.balance_ratio must be ≥ 1 (the larger class over the smaller)")
        if self.sft.answer_tokens is not None and self.sft.answer_tokens < 1:
            raise ValueError("sft.answer_tokens must be ≥ 1 (or unset: whole answers)")
        if any(spec.skip < 0 for spec in self.data.sets):
            raise ValueError("data.sets[].skip must be ≥ 0")
        if self.rl.start and self.rl.prompts > 0 and self.ship == "sft":
            raise ValueError("ship: sft with rl.start: no SFT stage runs (RL trains rl.start further); ship: rl")
        labels = self.sft.labels
        if labels.rule == "successor":
            for key in ("successor", "cost", "successor_cost"):
                if getattr(labels, key) is None:
                    raise ValueError(f"sft.labels.{key} is required with sft.labels.rule: successor")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a config file; `out` relative to the current directory, like any CLI path."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"training config {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a training config is a mapping (agent, model, out, …)")
    raw.update(overrides or {})
    try:
        return msgspec.convert(raw, TrainConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
