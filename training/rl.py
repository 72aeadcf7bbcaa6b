"""Stage 4 — RL: sharpen the SFT agent with TRL's GRPOTrainer and the paper's reward.

    reward = 1            a correct answer
             0            a wrong answer
             (1 − α)^γ    "I don't know!"        (γ = 0.5)

so the best policy answers exactly when its chance of being right exceeds (1 − α)^γ, the same
threshold the confidence rule applies (`actors/decision.py`). α is drawn per prompt from the
config's scenarios and reaches the model through the prompt, as in serving.

Rollouts are graded the way serving treats a reply: a reply that opens with the reject phrase
is a reject (the stream would have stopped there), and an answer counts up to its first
complete answer line (what serving keeps).

Prompts: questions of the training mix, each with an α drawn for it. With `balance_decisions`
half the prompts are (question, α) pairs where answering is the reward's optimum and half where
rejecting is: a weak agent's questions are mostly reject-optimal, GRPO then drives it to "always
reject", and once every completion of a group is the reject the group's rewards are equal and
teach nothing any more (measured: SmolLM2 collapsed to 6-token rejects on every prompt within 7
steps on unbalanced prompts). A GRPO group whose completions all earn the same reward has zero
advantage, so on a CPU budget such prompts are wasted steps. The run starts from the SFT adapter and trains it further; checkpoints go to
`<out>/rl/checkpoints`, the adapter to `<out>/rl/adapter`.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog

from disrouter.actors.decision import is_reject, reject_threshold
from disrouter.actors.engines.prompting import cut_after_answer
from disrouter.training import backend
from disrouter.training.config import TrainConfig
from disrouter.training.grading import is_correct
from disrouter.training.labels import self_aware_messages
from disrouter.training.sampling import Competence
from disrouter.training.sft import StageCost

log = structlog.get_logger("disrouter.training")


def reward(reply: str, alpha: float, gold: str, kind: str, gamma: float) -> float:
    """The paper's self-awareness reward for one reply."""
    if is_reject(reply):
        return reject_threshold(alpha, gamma)
    return 1.0 if is_correct(kind, cut_after_answer(reply), gold) else 0.0


def expected_reward(reply: str, alpha: float, p: float, gamma: float) -> float:
    """The reward in expectation over the answer: a reject earns (1 − α)^γ, an answer the
    question's competence p (`rl.reward: expected`). Only the decision is graded."""
    return reject_threshold(alpha, gamma) if is_reject(reply) else p


def _text(completion: Any) -> str:
    # TRL passes conversational completions as [{"role": "assistant", "content": …}].
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def make_reward_fn(gamma: float, mode: Literal["sampled", "expected"] = "sampled"):
    """TRL's reward function; its keyword arguments are the prompt rows' columns."""
    if mode == "expected":
        def self_awareness(completions: list[Any], alpha: list[float], p: list[float], **_: Any) -> list[float]:
            return [expected_reward(_text(c), a, q, gamma) for c, a, q in zip(completions, alpha, p)]
    else:
        def self_awareness(completions: list[Any], alpha: list[float], gold: list[str], kind: list[str], **_: Any) -> list[float]:
            return [reward(_text(c), a, g, k, gamma) for c, a, g, k in zip(completions, alpha, gold, kind)]

    return self_awareness


def prompts(cfg: TrainConfig, records: list[Competence]) -> list[dict[str, Any]]:
    """The RL prompts: (question, α) pairs with what the reward needs (see the module doc)."""
    rng = random.Random(cfg.seed + 1)
    r = cfg.rl
    train = sorted((rec for rec in records if rec.split == "train"), key=lambda rec: rec.id)
    pairs = [(rec, alpha) for rec in train for alpha in r.alphas]
    rng.shuffle(pairs)
    if r.balance_decisions:
        # As many pairs where answering is the reward's optimum (p > (1 − α)^γ) as pairs where
        # rejecting is: a weak agent's questions are mostly reject-optimal, and a policy that has
        # collapsed to "always reject" gets groups with one reward and no gradient back out.
        answer = _one_per_question([pr for pr in pairs if pr[0].p > reject_threshold(pr[1], r.gamma)])
        taken = {rec.id for rec, _ in answer}
        # Rejects worth learning are the ones the agent sometimes gets right (0 < p): a question
        # it never solves is rejected after SFT already.
        reject = _one_per_question(sorted(
            (pr for pr in pairs if pr[0].p <= reject_threshold(pr[1], r.gamma) and pr[0].id not in taken),
            key=lambda pr: 0 if pr[0].p > 0 else 1,
        ))
        half = min(len(answer), len(reject), r.prompts // 2)
        chosen = answer[:half] + reject[: r.prompts - half] if half else _one_per_question(pairs)[: r.prompts]
    else:
        chosen = _one_per_question(pairs)[: r.prompts]
    rows = [
        {"prompt": self_aware_messages(rec.prompt, alpha), "alpha": alpha, "gold": rec.gold, "kind": rec.kind, "id": rec.id, "p": rec.p}
        for rec, alpha in chosen
    ]
    rng.shuffle(rows)
    return rows


def _one_per_question(pairs: list[tuple[Competence, float]]) -> list[tuple[Competence, float]]:
    seen: set[str] = set()
    out = []
    for record, alpha in pairs:
        if record.id not in seen:
            seen.add(record.id)
            out.append((record, alpha))
    return out


def train_rl(cfg: TrainConfig, records: list[Competence], start: Path, out: Path) -> tuple[Path, StageCost]:
    """GRPO from the adapter at `start` (the SFT stage's, or `rl.start`)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows = prompts(cfg, records)
    if not rows:
        raise ValueError("no training question for RL: run the competence stage first")
    r = cfg.rl
    checkpoints = out / "checkpoints"
    args = GRPOConfig(
        num_train_epochs=1,
        per_device_train_batch_size=r.batch_size,
        gradient_accumulation_steps=r.grad_accum,
        num_generations=r.num_generations,
        max_completion_length=r.max_completion_length,
        temperature=r.temperature,
        learning_rate=r.learning_rate,
        beta=r.beta,
        scale_rewards=r.scale_rewards,
        lr_scheduler_type="constant",
        logging_steps=1,
        **backend.trainer_args(cfg, checkpoints, r.save_steps),
    )
    generated = {"tokens": 0}

    class CountTokens(TrainerCallback):
        # TRL logs the mean completion length per step; tokens sampled = mean × completions.
        def on_log(self, args_, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                generated["tokens"] += int(logs["completions/mean_length"] * r.batch_size * r.grad_accum)

    started = time.perf_counter()
    trainer = GRPOTrainer(
        model=backend.load_model(cfg, adapter=start, trainable=True),
        reward_funcs=make_reward_fn(r.gamma, r.reward),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=backend.load_tokenizer(cfg),
        callbacks=[CountTokens()],
    )
    result, adapter = backend.train_resumable(trainer, checkpoints, out, "rl")
    cost = StageCost(
        stage="rl",
        wall_s=round(time.perf_counter() - started, 1),
        device=backend.device(cfg),
        dtype=backend.dtype_name(cfg),
        tokens_sampled=generated["tokens"],
        # Each rollout (prompt + completion) passes forward and backward once per step.
        tokens_trained=generated["tokens"] + sum(_prompt_tokens(trainer, row) for row in rows) * r.num_generations,
        steps=int(result.global_step),
        examples=len(rows),
    )
    log.info("rl_done", adapter=str(adapter), **msgspec.to_builtins(cost))
    return adapter, cost


def _prompt_tokens(trainer: Any, row: dict[str, Any]) -> int:
    ids = trainer.processing_class.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "input_ids") else ids)
