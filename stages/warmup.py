"""Warm-up stage: supervised fine-tuning of the base model on the demonstrations, on TRL's SFTTrainer.

Recipe: load the demonstrations (gated by `coldstart score` when asked) and the base model, build the trainer
(SFT and DFT as TRL has them, CADFT as its subclass, with rewriting), train (resuming from the last checkpoint of
an interrupted attempt), save `final/` in HF format, plot the CADFT weights, and hand the metrics to the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from trl import SFTConfig

from coldstart import cards, tracking
from coldstart.asft import ASFTTrainer
from coldstart.cadft import CADFTConfig, CADFTTrainer
from coldstart.checkpoint import training_eos
from coldstart.compatibility import gate_keep, use_fused_head
from coldstart.config import Config, dump_config, settings
from coldstart.data import load_samples
from coldstart.runtime import Runtime
from coldstart.errors import ColdstartError
from coldstart.lengths import apply_length_policy
from coldstart.models import lora_config, model_fingerprint, resolve_model_path
from coldstart.plots import weights_over_training
from coldstart.runs import RunDir, read_jsonl, tree_sha256
from coldstart.training import (
    CheckpointSeal, MetricsLog, NumericalGuard, readable_console, resume_point, stage_keep, trainer_kwargs,
    trim_checkpoints,
)
from coldstart.warmup_trainer import WarmupTrainer

logger = logging.getLogger(__name__)

# what the console shows per logged step (CADFT's figures exist only for cadft)
CONSOLE = {"loss": "loss", "nll": "nll", "weight_mean": "mean weight", "ess_fraction": "ESS",
           "anchor_kl": "anchor KL", "grad_norm": "grad norm"}

# coldstart's loss names -> TRL's `loss_type` (CADFTTrainer and ASFTTrainer have their own losses)
LOSS_TYPES = {"sft": "nll", "dft": "dft", "asft": "dft"}


def build_trainer(cfg: Config, output_dir: Path, train_dataset, model, tokenizer, ema_init=None,
                  base_model=None) -> WarmupTrainer:
    """The warm-up trainer for `cfg.warmup.loss`, loss only on the completion: TRL's SFTTrainer with coldstart's
    log-prob path for sft and dft, the public `CADFTTrainer` (with rewriting when enabled) for cadft, and
    `ASFTTrainer` for asft (`base_model` is its frozen anchor; None under LoRA)."""
    w = cfg.warmup
    common = dict(
        **trainer_kwargs(w, output_dir, cfg.seed, tracking.trainer_args(cfg, "warmup"), cfg.runtime.timeout_minutes),
        completion_only_loss=True,
        eos_token=training_eos(w.eos_token, tokenizer),
    )
    callbacks = [MetricsLog(output_dir / "metrics.jsonl"), NumericalGuard("warmup"), CheckpointSeal()]
    if w.loss == "cadft":
        args = CADFTConfig(
            **common, logprobs=w.logprobs, **dataclasses.asdict(w.cadft),
            **{f"rewrite_{k}": v for k, v in dataclasses.asdict(w.rewrite).items()},
        )
        trainer = CADFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                               peft_config=lora_config(cfg.model), callbacks=callbacks, ema_init=ema_init)
    elif w.loss == "asft":
        trainer = ASFTTrainer(model=model, args=SFTConfig(**common, loss_type=LOSS_TYPES[w.loss]),
                              train_dataset=train_dataset, processing_class=tokenizer,
                              peft_config=lora_config(cfg.model), callbacks=callbacks, anchor=w.asft.anchor,
                              base_model=base_model)
    else:
        trainer = WarmupTrainer(model=model, args=SFTConfig(**common, loss_type=LOSS_TYPES[w.loss]),
                                train_dataset=train_dataset, processing_class=tokenizer,
                                peft_config=lora_config(cfg.model), callbacks=callbacks,
                                fused=use_fused_head(w.logprobs))
    readable_console(trainer, "warmup", CONSOLE)
    return trainer


def rewrite_summary(rewrites: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds, attempts and accepted rewrites, and how many of those training drew afterwards (and how often)."""
    accepted = [r for r in rewrites if r["accepted"]]
    return {
        "rounds": len({r["step"] for r in rewrites}),
        "attempts": len(rewrites),
        "accepted": len(accepted),
        "trained_on": sum(r.get("trained_on", 0) > 0 for r in accepted),
        "trained_on_visits": sum(r.get("trained_on", 0) for r in accepted),
    }


def _gated(cfg: Config) -> bool:
    return cfg.warmup.gate.min_compatibility is not None or cfg.warmup.gate.drop_fraction > 0


def _score_dir(cfg: Config, run_dir: RunDir) -> Path | None:
    """The score stage's folder when the warm-up reads it: for the gate (required) or to start the EMA."""
    if _gated(cfg):
        return run_dir.require("score", "warmup.gate")
    if cfg.warmup.loss == "cadft" and cfg.warmup.cadft.stats == "ema" and run_dir.finished("score"):
        return run_dir.stage_dir("score")
    return None


def _apply_gate(cfg: Config, train, score_dir: Path):
    scores = score_dir / "scores.jsonl"
    by_id = {r["id"]: r["compatibility"] for r in read_jsonl(scores)}
    missing = [i for i in train["id"] if i not in by_id]
    if missing:
        raise ColdstartError(f"{scores}: no score for sample {missing[0]!r}; re-run `coldstart score --force score`")
    gate = cfg.warmup.gate
    keep = gate_keep([by_id[i] for i in train["id"]], gate.min_compatibility, gate.drop_fraction)
    if not any(keep):
        raise ColdstartError("warmup.gate: drops every training sample; lower min_compatibility or drop_fraction")
    return train.select([i for i, k in enumerate(keep) if k]), keep.count(False)


def _style_means(metrics: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean per-style compatibility and weight over the logged steps."""
    out: dict[str, dict[str, float]] = {}
    keys = {k for m in metrics for k in m if k.startswith("style/")}
    for key in sorted(keys):
        values = [m[key] for m in metrics if key in m]
        _, style, what = key.split("/")
        out.setdefault(style, {})[what] = sum(values) / len(values)
    return out


def fingerprint(cfg: Config, model_path: str, score_dir: Path | None) -> dict[str, Any]:
    sections = {k: settings(getattr(cfg, k)) for k in ("model", "data", "warmup")}
    score = tree_sha256(score_dir) if score_dir is not None else None
    return {"seed": cfg.seed, **sections, "base_model": model_fingerprint(model_path), "score": score}


def run(cfg: Config, run_dir: RunDir, runtime: Runtime, force: bool = False) -> dict[str, Any]:
    model_path = resolve_model_path(cfg.model.name_or_path)
    if cfg.warmup.loss == "none":  # no warm-up: the handoff takes the base model
        return run_dir.run_stage("warmup", {"loss": "none", "base_model": model_fingerprint(model_path)},
                                 lambda work: {"loss": "none"}, force=force, config_text=dump_config(cfg))
    score_dir = _score_dir(cfg, run_dir)

    def body(work: Path) -> dict[str, Any]:
        train, stats = load_samples(cfg.data, "train", cfg.seed)
        dropped = 0
        if _gated(cfg):
            train, dropped = _apply_gate(cfg, train, score_dir)
        ema_init = None
        if score_dir is not None and cfg.warmup.cadft.stats == "ema":
            summary = json.loads((score_dir / "summary.json").read_text())
            ema_init = (summary["nll_mean"], summary["nll_std"])
        tokenizer = runtime.load_tokenizer(model_path, cfg.model.trust_remote_code)
        train, too_long = apply_length_policy(train, tokenizer, cfg.warmup.max_length, cfg.warmup.too_long)
        model = runtime.load_model(cfg.model, model_path, train=True)
        anchored = cfg.warmup.loss == "asft" and not cfg.model.lora.enabled
        base_model = runtime.load_model(cfg.model, model_path, train=True) if anchored else None
        with tracking.stage_env(cfg, "warmup"):
            trainer = build_trainer(cfg, work, train, model, tokenizer, ema_init, base_model)
            result = trainer.train(resume_from_checkpoint=resume_point(work))
        trainer.save_model(str(work / "final"))
        if not runtime.is_main:  # the report reads what the main process logged, and only its metrics are recorded
            return {}
        metrics = read_jsonl(work / "metrics.jsonl")
        losses = [m["loss"] for m in metrics if "loss" in m]
        out = {
            "loss": cfg.warmup.loss,
            "steps": trainer.state.global_step,
            "train_loss": result.training_loss,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "train_runtime_s": result.metrics.get("train_runtime"),
            "data": {**stats.to_dict(), "gated_out": dropped, "too_long_dropped": too_long},
        }
        if isinstance(trainer, CADFTTrainer):
            weights_over_training(metrics, work / "weights.png")
            out["by_style"] = _style_means(metrics)
            if cfg.warmup.rewrite.enabled:
                out["rewrites"] = r = rewrite_summary(read_jsonl(work / "rewrites.jsonl"))
                logger.info(
                    "warmup: rewriting: %d rounds, %d of %d attempts accepted, %d trained on afterwards (%d times)",
                    r["rounds"], r["accepted"], r["attempts"], r["trained_on"], r["trained_on_visits"],
                )
        return out

    entry = run_dir.run_stage(
        "warmup", fingerprint(cfg, model_path, score_dir), body, force=force, config_text=dump_config(cfg),
        keep=stage_keep(cfg.warmup.keep_checkpoints),
    )
    if cfg.warmup.keep_checkpoints == "weights" and runtime.is_main:  # once in place: a resume needs what it drops
        trim_checkpoints(run_dir.stage_dir("warmup"), run_dir.stage_dir("warmup") / "final")
    cards.refresh(cfg, run_dir, ("warmup",))
    return entry
