"""`disrouter train STAGE CONFIG`: the self-awareness pipeline (training/pipeline.py).

    disrouter train all training/recipes/smollm2.yaml        # every stage, resumable
    disrouter train sample training/recipes/smollm2.yaml     # one stage
    disrouter train report CONFIG --adapter DIR              # report on any adapter
    disrouter train report CONFIG --adapter DIR --update-card  # … into that exported adapter's card
    disrouter train calibrate CONFIG                         # per-scenario reject thresholds

Heavy imports (vLLM, TRL, torch) happen inside the stages, so `disrouter --help` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys

STAGE_HELP = {
    "all": "every stage in order: sample, labels, sft, rl, report, export",
    "sample": "competence: N own replies per question through vLLM, graded (cached, resumable)",
    "labels": "SFT data: the paper's labels per scenario, balanced, with statistics",
    "sft": "SFT with TRL's SFTTrainer and LoRA (checkpoints, resumable)",
    "rl": "GRPO with TRL's GRPOTrainer and the paper's reward (checkpoints, resumable)",
    "report": "self-awareness on held-out questions, before vs after (JSON, table, plot)",
    "export": "the adapter vLLM serves, with its card (config, metrics, command, training cost)",
    "calibrate": "not in `all`: per-scenario reject_at for the agent as `calibrate.topology` serves it",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an agent's self-awareness (sample → SFT → RL → report → export)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=list(STAGE_HELP), metavar="STAGE",
                   help="; ".join(f"{k}: {v}" for k, v in STAGE_HELP.items()))
    p.add_argument("config", help="training config (YAML; see training/recipes/)")
    p.add_argument("--force", action="store_true", help="redo the stage(s) even if their output exists")
    p.add_argument("--out", help="override the config's output folder")
    p.add_argument("--adapter", help="report: evaluate this adapter folder instead of the run's own")
    p.add_argument("--update-card", action="store_true",
                   help="report --adapter: write the report into that exported adapter's card")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from disrouter.training.config import ConfigError, load_config
    from disrouter.training.pipeline import STAGES, Run

    try:
        cfg = load_config(args.config, {"out": args.out} if args.out else None)
    except ConfigError as exc:
        print(f"disrouter train: {exc}", file=sys.stderr)
        return 2
    # The card names the command that reproduces the whole adapter, whichever stage ran last.
    command = f"disrouter train all {shlex.quote(args.config)}" + (f" --out {shlex.quote(args.out)}" if args.out else "")
    run_ = Run(cfg, args.config, command)
    if args.stage == "calibrate":
        from disrouter.topology.errors import TopologyError
        from disrouter.training.calibrate import calibrate, table

        try:
            print(table(calibrate(cfg, force=args.force)))
        except (ValueError, FileNotFoundError, TopologyError) as exc:
            print(f"disrouter train calibrate: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.update_card and not (args.stage == "report" and args.adapter):
        print("disrouter train: --update-card goes with `report --adapter DIR` (an exported adapter)", file=sys.stderr)
        return 2
    if args.stage == "report" and args.adapter:
        from disrouter.training.export import card_path, update_metrics

        if args.update_card:
            try:
                card_path(Path(args.adapter))  # before the report's minutes of generation, not after
            except FileNotFoundError as exc:
                print(f"disrouter train: {exc}", file=sys.stderr)
                return 2
        report = run_.report(force=True, adapter=Path(args.adapter))
        if args.update_card:
            measured_by = shlex.join(["disrouter", "train", "report", args.config, *(["--out", args.out] if args.out else []),
                                      "--adapter", args.adapter, "--update-card"])
            print(f"updated {update_metrics(Path(args.adapter), report, measured_by)}")
        return 0
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    try:
        run_.run(stages, force=args.force)
    except FileNotFoundError as exc:
        print(f"disrouter train: {exc}", file=sys.stderr)
        return 1
    return 0
