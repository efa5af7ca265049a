"""Eval stage: the pipeline's last model (RL, else handoff, else warm-up) on held-out problems, greedy.

Recipe: pick the model, load the held-out split, generate and grade, write `records.jsonl` (one line per problem)
and `results.json`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from coldstart.config import Config
from coldstart.data import load_samples
from coldstart.eval.evaluate import evaluate
from coldstart.models import load_model
from coldstart.runs import RunDir

# where each stage leaves its model, latest stage first
MODEL_FOLDERS = (("rl", "final"), ("handoff", "model"), ("warmup", "final"))


def latest_model(run_dir: RunDir) -> tuple[str, Path]:
    for stage, sub in MODEL_FOLDERS:
        if run_dir.finished(stage):
            return stage, run_dir.stage_dir(stage) / sub
    run_dir.require("warmup", "eval")  # raises with the message
    raise AssertionError("unreachable")


def run(cfg: Config, run_dir: RunDir, force: bool = False) -> dict[str, Any]:
    stage, model_dir = latest_model(run_dir)

    def body(work: Path) -> dict[str, Any]:
        test, stats = load_samples(cfg.data, "test", cfg.seed)
        if cfg.eval.num_problems:
            test = test.select(range(min(cfg.eval.num_problems, len(test))))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = load_model(cfg.model, str(model_dir))
        records, metrics = evaluate(model, tokenizer, test, cfg.eval.max_new_tokens, cfg.eval.batch_size)
        with (work / "records.jsonl").open("w", encoding="utf-8") as handle:
            for r in records:
                handle.write(json.dumps(r) + "\n")
        results = {"model": str(model_dir), "stage": stage, **metrics, "data": stats.to_dict()}
        (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        return results

    fingerprint = {
        "seed": cfg.seed,
        "model_stage": stage,
        "model": run_dir.finished(stage).get("outputs_sha256"),
        "data": dataclasses.asdict(cfg.data),
        "eval": dataclasses.asdict(cfg.eval),
    }
    return run_dir.run_stage("eval", fingerprint, body, force=force)
