"""Stage 1 — competence: how often is the agent itself right on each question?

For every question of the training mix and of the held-out set, N replies are sampled from the
agent through the same vLLM engine and the same prompt it is served with (the terminal prompt:
"work it out, end with The answer is: X", no reject offered), graded, and reduced to the
competence p = correct / N. One vLLM request with n = N per question, so the prompt is computed
once for all N samples; many questions are in flight at once and vLLM batches them.

The result is a cache, `<out>/competence.jsonl`, one line per question, appended as questions
finish: a cut run resumes where it stopped (questions already in the file are not sampled
again), and the later stages read nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import structlog
from tqdm import tqdm

from disrouter.actors.engine import EngineRequest
from disrouter.training.config import TrainConfig
from disrouter.training.data import Item
from disrouter.training.grading import is_correct
from disrouter.training.mix import max_tokens_for

log = structlog.get_logger("disrouter.training")

COMPETENCE_FILE = "competence.jsonl"


class Competence(msgspec.Struct, omit_defaults=True):
    """One question, N of the agent's own replies, graded."""

    id: str
    task: str
    split: str
    kind: str
    gold: str
    prompt: str
    p: float  # fraction of the samples that are right
    samples: list[str]
    correct: list[bool]
    tokens_in: int = 0
    tokens_out: int = 0  # generated, all samples
    level: str | None = None

    @property
    def n(self) -> int:
        return len(self.samples)


_decoder = msgspec.json.Decoder(Competence)
_encoder = msgspec.json.Encoder()


def read_competence(path: Path) -> dict[str, Competence]:
    """The cache so far (a torn last line from a killed run is skipped, then re-sampled)."""
    out: dict[str, Competence] = {}
    if not path.exists():
        return out
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = _decoder.decode(line)
            except msgspec.DecodeError:
                continue
            out[record.id] = record
    return out


def engine_spec(cfg: TrainConfig, adapter: str | Path | None = None, merge: bool = True) -> dict[str, Any]:
    """The vLLM engine block the run samples with (and the report serves the adapter with).

    The adapter is merged by default: the same replies as vLLM's LoRA path (the pipeline test
    checks both against PEFT), at the ~1.7× speed the merged model runs at on CPU.
    """
    spec: dict[str, Any] = {"type": "vllm", "model": cfg.model, "seed": cfg.seed, **cfg.engine}
    if adapter is not None:
        spec["lora"] = {"name": f"{cfg.agent}-selfaware", "path": str(adapter), "merge": merge}
    return spec


def forced_request(item: Item, max_tokens: int) -> EngineRequest:
    """The prompt a terminal agent gets: answer, no reject offered."""
    return EngineRequest(query_id=item.id, prompt=item.prompt, alpha=0.0, allow_reject=False, max_tokens=max_tokens)


async def _sample_all(
    engine: Any, cfg: TrainConfig, items: list[Item], path: Path, bar: tqdm
) -> None:
    semaphore = asyncio.Semaphore(cfg.sample.concurrency)
    with path.open("ab") as fh:
        if fh.tell() and _last_byte(path) != b"\n":
            fh.write(b"\n")  # a killed run left a torn line: start ours on a line of its own

        async def one(item: Item) -> None:
            async with semaphore:
                request = forced_request(item, max_tokens_for(cfg, item.task))
                samples = await engine.sample(request, cfg.sample.n, cfg.sample.temperature, cfg.sample.top_p)
            marks = [is_correct(item.kind, s.text, item.gold) for s in samples]
            record = Competence(
                id=item.id,
                task=item.task,
                split=item.split,
                kind=item.kind,
                gold=item.gold,
                prompt=item.prompt,
                p=round(sum(marks) / len(marks), 6),
                samples=[s.text for s in samples],
                correct=marks,
                tokens_in=samples[0].tokens_in if samples else 0,
                tokens_out=sum(s.tokens_out for s in samples),
                level=item.level,
            )
            fh.write(_encoder.encode(record) + b"\n")
            fh.flush()
            bar.update(1)

        await asyncio.gather(*(one(item) for item in items))


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1)


async def sample_competence(cfg: TrainConfig, items: Iterable[Item], engine: Any | None = None,
                            path: Path | None = None, label: str | None = None) -> dict[str, Competence]:
    """Sample every question not yet in the cache (`path`, by default the run's competence
    cache); returns the whole cache. Without an engine, one is built for `sample.adapter`."""
    from disrouter.actors.engine import build_engine

    path = path or cfg.out_dir / COMPETENCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_competence(path)
    todo = [item for item in items if item.id not in done]
    if not todo:
        log.info("competence_cached", questions=len(done), path=str(path))
        return done
    own = engine is None
    if own:
        engine = build_engine(engine_spec(cfg, cfg.sample.adapter), agent=cfg.agent)
        await engine.start()
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"competence {label or cfg.agent} (n={cfg.sample.n})", unit="q")
    try:
        await _sample_all(engine, cfg, todo, path, bar)
    finally:
        bar.close()
        if own:
            await engine.close()
    log.info("competence_sampled", questions=len(todo), seconds=round(time.perf_counter() - started, 1))
    return read_competence(path)


def as_item(record: Competence) -> Item:
    """The question a competence record was sampled on, to sample it again with another model."""
    return Item(id=record.id, task=record.task, prompt=record.prompt, gold=record.gold, kind=record.kind,  # type: ignore[arg-type]
                split=record.split, level=record.level)  # type: ignore[arg-type]


class CompetenceStats(msgspec.Struct):
    """Accuracy of the agent's samples per task, split and difficulty level."""

    group: str
    questions: int
    accuracy: float  # mean p
    known: float  # share of questions with p ≥ 0.9 (answered at every α)
    unknown: float  # share with p = 0


def competence_stats(records: Iterable[Competence]) -> list[CompetenceStats]:
    groups: dict[str, list[float]] = {}
    for r in records:
        for key in (f"{r.task}/{r.split}", f"{r.task}/{r.split}/{r.level}" if r.level else None):
            if key:
                groups.setdefault(key, []).append(r.p)
    return [
        CompetenceStats(
            key,
            len(ps),
            round(sum(ps) / len(ps), 4),
            round(sum(p >= 0.9 for p in ps) / len(ps), 4),
            round(sum(p == 0 for p in ps) / len(ps), 4),
        )
        for key, ps in sorted(groups.items())
    ]
