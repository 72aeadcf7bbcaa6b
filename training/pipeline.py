"""The self-awareness pipeline, stage by stage, each resumable from what the last run left.

    sample  → <out>/competence.jsonl     N own replies per question, graded (vLLM)
    labels  → <out>/sft/dataset.jsonl    the paper's SFT labels, balanced, + stats.json
    sft     → <out>/sft/adapter          TRL SFTTrainer, LoRA, loss on the completion
    rl      → <out>/rl/adapter           TRL GRPOTrainer, reward 1 / 0 / (1 − α)^γ
    report  → <out>/report/              held-out self-awareness, before vs after (vLLM + LoRA)
    export  → export_to (or <out>/adapter) the adapter vLLM serves + its card

A stage whose output exists is skipped (delete the output, or pass --force, to redo it); a
training stage that was cut resumes from its newest checkpoint. What each stage cost (wall
time, tokens sampled, tokens trained) accumulates in `<out>/costs.json` for the card.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog

from disrouter.actors.resources import resolve_path
from disrouter.training import labels as sft_labels
from disrouter.training.config import TrainConfig
from disrouter.training.data import Item
from disrouter.training.mix import questions, validation
from disrouter.training.sampling import (
    COMPETENCE_FILE,
    Competence,
    as_item,
    competence_stats,
    engine_spec,
    read_competence,
    sample_competence,
)
from disrouter.training.sft import StageCost

log = structlog.get_logger("disrouter.training")

STAGES = ("sample", "labels", "sft", "rl", "report", "export")


class Run:
    """One config's run folder: where every stage reads and writes."""

    def __init__(self, cfg: TrainConfig, config_file: str, command: str) -> None:
        self.cfg = cfg
        self.out = cfg.out_dir
        self.config_file = config_file
        self.command = command

    # --- paths ---------------------------------------------------------------------------------
    @property
    def competence_path(self) -> Path:
        return self.out / COMPETENCE_FILE

    @property
    def sft_dir(self) -> Path:
        return self.out / "sft"

    @property
    def rl_dir(self) -> Path:
        return self.out / "rl"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    def final_adapter(self) -> Path:
        """The adapter to report and ship: RL's when RL ran (unless `ship: sft`), else SFT's."""
        use_rl = self.cfg.ship == "rl" and self.cfg.rl.prompts > 0 and _trained(self.rl_dir)
        return self.rl_dir / "adapter" if use_rl else self.sft_dir / "adapter"

    def _needs_training(self, stage_dir: Path, force: bool) -> bool:
        """False when the stage's adapter is there and not forced; a forced run starts over
        (its old checkpoints would otherwise be resumed)."""
        if _trained(stage_dir) and not force:
            log.info(f"{stage_dir.name}_exists", adapter=str(stage_dir / "adapter"))
            return False
        if force:
            shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
        return True

    # --- costs ---------------------------------------------------------------------------------
    def costs(self) -> dict[str, dict[str, Any]]:
        path = self.out / "costs.json"
        return msgspec.json.decode(path.read_bytes()) if path.exists() else {}

    def record_cost(self, cost: StageCost) -> None:
        costs = self.costs()
        costs[cost.stage] = msgspec.to_builtins(cost)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "costs.json").write_bytes(msgspec.json.format(msgspec.json.encode(costs), indent=2) + b"\n")

    def competence(self) -> list[Competence]:
        records = list(read_competence(self.competence_path).values())
        if not records:
            raise FileNotFoundError(f"{self.competence_path} is empty: run `disrouter train sample` first")
        return records

    # --- stages --------------------------------------------------------------------------------
    def sample(self, force: bool = False) -> None:
        from disrouter.training import backend

        if force:
            self.competence_path.unlink(missing_ok=True)
        train, held_out = questions(self.cfg)
        before = len(read_competence(self.competence_path))
        started = time.perf_counter()
        records = asyncio.run(sample_competence(self.cfg, train + held_out))
        if len(records) > before:  # something was sampled this time: account for it
            previous = self.costs().get("sample", {}).get("wall_s", 0.0) if before else 0.0
            self.record_cost(StageCost(
                stage="sample",
                wall_s=round(previous + time.perf_counter() - started, 1),
                device=backend.device(self.cfg),
                dtype=f"vllm {backend.dtype_name(self.cfg)}",
                tokens_sampled=sum(r.tokens_out for r in records.values()),
                examples=len(records),
            ))
        stats = competence_stats(records.values())
        (self.out / "competence-stats.json").write_bytes(msgspec.json.format(msgspec.json.encode(stats), indent=2) + b"\n")
        for row in stats:
            log.info("competence", group=row.group, questions=row.questions, accuracy=row.accuracy, known=row.known, unknown=row.unknown)

    @property
    def sft_runs(self) -> bool:
        """Whether this run has SFT stages: not when RL trains a given adapter (`rl.start`)."""
        return not (self.cfg.rl.start and self.cfg.rl.prompts > 0)

    def labels(self, force: bool = False) -> None:
        path = self.sft_dir / sft_labels.DATASET_FILE
        if not self.sft_runs:
            log.info("labels_skipped", reason="rl.start: RL trains that adapter further, no SFT")
            return
        if path.exists() and not force:
            log.info("labels_exist", path=str(path))
            return
        tokenizer = None
        if self.cfg.sft.answer_tokens is not None:  # only a cut needs it: labels load no model otherwise
            from disrouter.training import backend

            tokenizer = backend.load_tokenizer(self.cfg)
        examples, stats = sft_labels.build_examples(self.cfg, self.competence(), tokenizer)
        sft_labels.write_examples(self.sft_dir, examples, stats)
        log.info("labels_written", path=str(path), examples=len(examples), per_alpha=stats["per_alpha"])

    def sft(self, force: bool = False) -> None:
        from disrouter.training.sft import train_sft

        if not self.sft_runs:
            log.info("sft_skipped", reason="rl.start: RL trains that adapter further")
            return
        if not self._needs_training(self.sft_dir, force):
            return
        self.labels()
        _, cost = train_sft(self.cfg, self.sft_dir / sft_labels.DATASET_FILE, self.sft_dir)
        self.record_cost(cost)

    def rl(self, force: bool = False) -> None:
        from disrouter.training.rl import train_rl

        if self.cfg.rl.prompts <= 0:
            log.info("rl_skipped", reason="rl.prompts is 0")
            return
        if not self._needs_training(self.rl_dir, force):
            return
        if self.cfg.rl.start:
            start = resolve_path(self.cfg.rl.start)
        else:
            self.sft()
            start = self.sft_dir / "adapter"
        _, cost = train_rl(self.cfg, self.competence(), start, self.rl_dir)
        self.record_cost(cost)

    def report(self, force: bool = False, adapter: Path | None = None) -> dict[str, Any]:
        from disrouter.training import report as rpt

        path = self.report_dir / "report.json"
        if path.exists() and not force and adapter is None:
            log.info("report_exists", path=str(path))
            return msgspec.json.decode(path.read_bytes())
        records = self.competence()
        test = sorted((r for r in records if r.split == "test"), key=lambda r: r.id)
        train = [r for r in records if r.split == "train"]
        if not test:
            raise ValueError("no held-out question in the competence cache: set data.eval_questions")
        adapter = adapter or self.final_adapter()
        fit_on = self._probe_questions()
        base, trained = asyncio.run(self._report_replies(test, adapter, fit_on))
        probe = rpt.minilm_probe(trained.validation, test, self.cfg.seed) if trained.validation else None
        # A probe of the base model needs the base model's competence on the training mix: the
        # cache is that only where the run sampled the base itself.
        base_probe = rpt.minilm_probe(train, test, self.cfg.seed) if train and not self.cfg.sample.adapter else None
        report = rpt.build_report(self.cfg, test, base.replies, trained.replies, probe, base_p=base.p,
                                  trained_p=trained.p, base_probe=base_probe,
                                  reject_at=rpt.fitted_reject_at(trained, self.cfg) or None)
        report["adapter"] = str(adapter)
        report["probe_questions"] = {"trained": len(trained.validation), "base": len(train) if base_probe is not None else 0}
        written = rpt.write(report, self.report_dir)
        print(report["table"])
        log.info("report_written", files=[str(p) for p in written])
        return report

    def _probe_questions(self) -> list[Item]:
        """The questions the trained model's probe is fitted on: the validation questions, which
        no stage trained on (none where the training mix takes the whole train split)."""
        try:
            return validation(self.cfg)
        except ValueError as exc:
            log.warning("probe_skipped", reason=str(exc))
            return []

    async def _report_replies(self, test: list[Competence], adapter: Path, fit_on: list[Item]):
        """(base, trained), each `report.Measurement`: the trained model is also measured on
        `fit_on`, the validation questions its probe and thresholds are fitted on."""
        from disrouter.actors.engine import build_engine
        from disrouter.training import report as rpt

        # Each model's own competence on these questions: the cache's is the base model's unless
        # the run sampled with an earlier adapter (`sample.adapter`); the trained one's is new.
        base_cache = rpt.competence_cache(self.report_dir, None) if self.cfg.sample.adapter else None
        held_out = [as_item(r) for r in test]
        measured = []
        for label, spec, confidence, alphas, cache, extra in (
            ("base", engine_spec(self.cfg), True, (), base_cache, []),
            ("trained", engine_spec(self.cfg, adapter), False, rpt.REPORT_ALPHAS,
             rpt.competence_cache(self.report_dir, adapter), fit_on),
        ):
            engine = build_engine(spec, agent=self.cfg.agent)
            await engine.start()
            try:
                model = rpt.Measurement(await rpt.collect(engine, test, self.cfg, alphas, confidence=confidence,
                                                       label=label))
                if cache is not None:
                    own = await rpt.own_competence(engine, held_out + extra, self.cfg, cache, label)
                    model.p = rpt.p_of(own, test)
                    model.validation = [own[item.id] for item in extra]
                if extra and getattr(engine, "reject_probability", None) is not None:
                    model.validation_mass = await rpt.reject_masses(engine, extra, self.cfg, alphas)
                measured.append(model)
            finally:
                await engine.close()
        return measured

    def export(self, force: bool = False) -> Path:
        from disrouter.training.export import export

        report_path = self.report_dir / "report.json"
        metrics = msgspec.json.decode(report_path.read_bytes()) if report_path.exists() else None
        stats_path = self.sft_dir / sft_labels.STATS_FILE
        data = {
            "sets": [msgspec.to_builtins(s) for s in self.cfg.data.sets],
            "split": f"hash split, train fraction {self.cfg.data.train_fraction}, seed {self.cfg.data.seed}",
            "competence": msgspec.to_builtins(competence_stats(self.competence())),
            "sft": msgspec.json.decode(stats_path.read_bytes()) if stats_path.exists() else None,
        }
        costs = [self.costs()[s] for s in ("sample", "sft", "rl") if s in self.costs()]
        dest = export(self.cfg, self.final_adapter(), costs=costs, data=data, metrics=metrics,
                      command=self.command, config_file=self.config_file)
        log.info("exported", to=str(dest))
        return dest

    def run(self, stages: list[str], force: bool = False) -> None:
        for stage in stages:
            log.info("stage", stage=stage, agent=self.cfg.agent, out=str(self.out))
            getattr(self, stage)(force=force)


def _trained(stage_dir: Path) -> bool:
    """Whether a stage left its adapter (`<stage>/adapter`)."""
    return (stage_dir / "adapter" / "adapter_config.json").exists()
