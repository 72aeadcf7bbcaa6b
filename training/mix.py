"""Which questions a training run uses: its training mix and its held-out questions.

For every set of the config: the first `train_questions` items of the set's train split are
the training mix (competence sampling, SFT labels, RL prompts) and the first `eval_questions`
items of its test split are held out for the self-awareness report. The split is the data
sets' own seeded hash split, the one `disrouter eval` uses, so the report's held-out questions
are never trained on, and a live evaluation of the same set sees none of the training mix.
"""

from __future__ import annotations

from disrouter.training.config import TrainConfig
from disrouter.training.data import Item, load


def questions(cfg: TrainConfig) -> tuple[list[Item], list[Item]]:
    """(training mix, held-out questions), each in set order."""
    train: list[Item] = []
    held_out: list[Item] = []
    for spec in cfg.data.sets:
        items = load(spec.name, limit=spec.limit, train_fraction=cfg.data.train_fraction, seed=cfg.data.seed).items
        if spec.levels:
            items = [item for item in items if item.level in set(spec.levels)]
        set_train = [item for item in items if item.split == "train"]
        set_test = [item for item in items if item.split == "test"]
        n_train = spec.train_questions if spec.train_questions is not None else cfg.data.train_questions
        n_eval = spec.eval_questions if spec.eval_questions is not None else cfg.data.eval_questions
        train += set_train if n_train is None else set_train[:n_train]
        held_out += set_test[:n_eval]
    return train, held_out


def max_tokens_for(cfg: TrainConfig, task: str) -> int:
    """The reply budget of a task's questions (per set in the config)."""
    for spec in cfg.data.sets:
        if spec.name == task:
            return spec.max_tokens
    return 192
