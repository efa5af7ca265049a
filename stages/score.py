"""Score stage: compatibility of every training demonstration under the base model, before any training.

Recipe: load the demonstrations (under `warmup.too_long`, as the warm-up sees them) and the base model, score them
in length-sorted batches (each process its share), write `scores.jsonl` (one line per sample), `summary.json`
(quantiles, per-style means) and `compatibility.png`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coldstart.compatibility import score_records, summarize, use_fused_head
from coldstart.config import Config, settings
from coldstart.data import load_samples
from coldstart.lengths import apply_length_policy
from coldstart.models import model_fingerprint, resolve_model_path
from coldstart.plots import compatibility_histogram
from coldstart.runs import RunDir, write_jsonl
from coldstart.runtime import Runtime


def fingerprint(cfg: Config, model_path: str) -> dict[str, Any]:
    return {
        "seed": cfg.seed,
        "model": settings(cfg.model),
        "data": settings(cfg.data),
        "max_length": cfg.warmup.max_length,
        "too_long": cfg.warmup.too_long,
        "base_model": model_fingerprint(model_path),
    }


def run(cfg: Config, run_dir: RunDir, runtime: Runtime, force: bool = False) -> dict[str, Any]:
    model_path = resolve_model_path(cfg.model.name_or_path)

    def body(work: Path) -> dict[str, Any]:
        train, stats = load_samples(cfg.data, "train", cfg.seed)
        tokenizer = runtime.load_tokenizer(model_path, cfg.model.trust_remote_code)
        train, too_long = apply_length_policy(train, tokenizer, cfg.warmup.max_length, cfg.warmup.too_long)
        model = runtime.load_model(cfg.model, model_path)
        fused = use_fused_head(cfg.warmup.logprobs)
        records = runtime.map(lambda part: score_records(model, tokenizer, part, cfg.warmup.max_length, fused), train)
        if not runtime.is_main:
            return {}
        write_jsonl(work / "scores.jsonl", records)
        summary = summarize(records)
        (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        compatibility_histogram(records, work / "compatibility.png", "Demonstrations under the base model")
        return {**summary, "data": {**stats.to_dict(), "too_long_dropped": too_long}}

    return run_dir.run_stage("score", fingerprint(cfg, model_path), body, force=force)
