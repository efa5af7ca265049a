"""Warm-up stage: supervised fine-tuning of the base model on the demonstrations, on TRL's SFTTrainer.

Recipe: load the demonstrations and the base model, build the trainer, train (resuming from the last checkpoint
of an interrupted attempt), save `final/` in HF format, and hand the metrics to the manifest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from trl import SFTConfig, SFTTrainer

from coldstart.config import Config, dump_config
from coldstart.data import load_samples
from coldstart.models import load_model, load_tokenizer, lora_config, model_fingerprint, resolve_model_path
from coldstart.runs import RunDir, is_checkpoint
from coldstart.training import MetricsLog, last_checkpoint, read_metrics, trainer_kwargs

# coldstart's loss names -> TRL's `loss_type`
LOSS_TYPES = {"sft": "nll", "dft": "dft"}


def build_trainer(cfg: Config, output_dir: Path, train_dataset, model, tokenizer) -> SFTTrainer:
    """The warm-up trainer for `cfg.warmup.loss`: TRL's SFTTrainer, loss only on the completion."""
    args = SFTConfig(
        **trainer_kwargs(cfg.warmup, output_dir, cfg.seed),
        loss_type=LOSS_TYPES[cfg.warmup.loss],
        completion_only_loss=True,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg.model),
        callbacks=[MetricsLog(output_dir / "metrics.jsonl")],
    )


def fingerprint(cfg: Config, model_path: str) -> dict[str, Any]:
    sections = {k: dataclasses.asdict(getattr(cfg, k)) for k in ("model", "data", "warmup")}
    return {"seed": cfg.seed, **sections, "base_model": model_fingerprint(model_path)}


def run(cfg: Config, run_dir: RunDir, force: bool = False) -> dict[str, Any]:
    model_path = resolve_model_path(cfg.model.name_or_path)

    def body(work: Path) -> dict[str, Any]:
        train, stats = load_samples(cfg.data, "train", cfg.seed)
        tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
        model = load_model(cfg.model, model_path)
        trainer = build_trainer(cfg, work, train, model, tokenizer)
        result = trainer.train(resume_from_checkpoint=last_checkpoint(work))
        trainer.save_model(str(work / "final"))
        losses = [m["loss"] for m in read_metrics(work / "metrics.jsonl") if "loss" in m]
        return {
            "loss": cfg.warmup.loss,
            "steps": trainer.state.global_step,
            "train_loss": result.training_loss,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "train_runtime_s": result.metrics.get("train_runtime"),
            "data": stats.to_dict(),
        }

    keep = (lambda rel: True) if cfg.warmup.keep_checkpoints else (lambda rel: not is_checkpoint(rel))
    return run_dir.run_stage(
        "warmup", fingerprint(cfg, model_path), body, force=force, config_text=dump_config(cfg), keep=keep
    )
