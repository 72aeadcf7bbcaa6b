"""Which questions a training run uses: its training mix and its held-out questions.

For every set of the config: the first `train_questions` items of the set's train split are
the training mix (competence sampling, SFT labels, RL prompts) and the first `eval_questions`
items of its test split are held out for the self-awareness report; the next
`calibrate.questions` of the train split validate `disrouter train calibrate` and fit the
report's probe of the trained model. The split is the data sets' own seeded hash split, the one
`disrouter eval` uses, so the report's held-out questions are never trained on, and a live
evaluation of the same set sees none of the training mix.
"""

from __future__ import annotations

from disrouter.training.config import DataSet, TrainConfig
from disrouter.training.data import Item, load


def questions(cfg: TrainConfig) -> tuple[list[Item], list[Item]]:
    """(training mix, held-out questions), each in set order."""
    train: list[Item] = []
    held_out: list[Item] = []
    for spec in cfg.data.sets:
        items = _items(cfg, spec)
        set_train = [item for item in items if item.split == "train"]
        set_test = [item for item in items if item.split == "test"]
        n_train = _train_questions(cfg, spec)
        n_eval = spec.eval_questions if spec.eval_questions is not None else cfg.data.eval_questions
        train += set_train if n_train is None else set_train[:n_train]
        held_out += set_test[:n_eval]
    return train, held_out


def _items(cfg: TrainConfig, spec: DataSet) -> list[Item]:
    items = load(spec.name, limit=spec.limit, train_fraction=cfg.data.train_fraction, seed=cfg.data.seed).items[spec.skip:]
    return [item for item in items if item.level in set(spec.levels)] if spec.levels else items


def _train_questions(cfg: TrainConfig, spec: DataSet) -> int | None:
    """The size of a set's training mix (None: its whole train split)."""
    return spec.train_questions if spec.train_questions is not None else cfg.data.train_questions


def validation(cfg: TrainConfig) -> list[Item]:
    """Questions no stage trains on, for calibrating a served agent and fitting a router for it:
    per set, the next `calibrate.questions` of the train split after the training mix (the
    test split stays for evaluation)."""
    chosen: list[Item] = []
    for spec in cfg.data.sets:
        set_train = [item for item in _items(cfg, spec) if item.split == "train"]
        n_train = _train_questions(cfg, spec)
        if n_train is None:
            raise ValueError(f"{spec.name}: the training mix takes the whole train split (train_questions unset): "
                             "no question is left to calibrate on")
        chosen += set_train[n_train:n_train + cfg.calibrate.questions]
    return chosen


def max_tokens_for(cfg: TrainConfig, task: str) -> int:
    """The reply budget of a task's questions (per set in the config)."""
    for spec in cfg.data.sets:
        if spec.name == task:
            return spec.max_tokens
    return 192
