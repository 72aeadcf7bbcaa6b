"""Where training runs: device, dtype, loading the base model (+ an adapter) for TRL, and the
trainer arguments and checkpoint resume that SFT and RL share.

CPU and GPU differ only here. `dtype: auto` is float32 on a CPU without native bf16 (AVX2
machines emulate bf16 matmuls: ~3× slower here) and bf16 on CUDA or a bf16-capable CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from disrouter.training.config import TrainConfig

log = structlog.get_logger("disrouter.training")


def device(cfg: TrainConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the config asks for device: cuda, but torch sees no CUDA device")
    return cfg.device


def dtype_name(cfg: TrainConfig) -> str:
    if cfg.dtype != "auto":
        return cfg.dtype
    if device(cfg) == "cuda":
        return "bfloat16"
    from disrouter.actors.engines.vllm import cpu_dtype

    return "bfloat16" if cpu_dtype() == "bfloat16" else "float32"


def precision_args(cfg: TrainConfig) -> dict[str, Any]:
    """The TrainingArguments fields that follow from device and dtype (TRL defaults to bf16)."""
    name = dtype_name(cfg)
    return {
        "use_cpu": device(cfg) == "cpu",
        "bf16": name == "bfloat16",
        "fp16": name == "float16",
        # The default models are small: activations fit, and recomputing them costs a third.
        "gradient_checkpointing": False,
    }


def trainer_args(cfg: TrainConfig, checkpoints: Path, save_steps: int) -> dict[str, Any]:
    """The TrainingArguments fields SFT and RL share: where and how often to checkpoint (two kept,
    so a cut run resumes), no external reporting, the run's seed, device and precision."""
    return {
        "output_dir": str(checkpoints),
        "save_steps": save_steps,
        "save_total_limit": 2,
        "report_to": [],
        "seed": cfg.seed,
        "dataloader_num_workers": 0,
        **precision_args(cfg),
    }


def base_model_path(cfg: TrainConfig) -> str:
    from disrouter.actors.models import resolve_model

    return resolve_model(cfg.model)


def load_tokenizer(cfg: TrainConfig) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_path(cfg))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: TrainConfig, adapter: Path | None = None, trainable: bool = True) -> Any:
    """The base model in the run's dtype on its device, with `adapter` loaded when given."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model_path(cfg), dtype=getattr(torch, dtype_name(cfg)))
    model.to(device(cfg))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    return model


def lora_config(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    lora = cfg.sft.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def train_resumable(trainer: Any, checkpoints: Path, out: Path, stage: str) -> tuple[Any, Path]:
    """Train from the newest checkpoint when a cut run left one, then save the adapter to
    `<out>/adapter`; returns (the trainer's TrainOutput, the adapter folder)."""
    resume = last_checkpoint(checkpoints)
    if resume:
        log.info(f"{stage}_resume", checkpoint=resume)
    result = trainer.train(resume_from_checkpoint=resume)
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    return result, adapter


def last_checkpoint(folder: Path) -> str | None:
    """The newest `checkpoint-N` folder under `folder`, for resuming a cut run."""
    if not folder.is_dir():
        return None
    points = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return str(max(points, key=lambda p: int(p.name.split("-")[-1]))) if points else None
