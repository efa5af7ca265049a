"""Eval stage: the run's models on the same held-out problems: the base model (`eval.base`), the warmed model (as
handed to RL) and, when RL ran, the RL model, with the warm-up's and RL's gains as paired differences.

Recipe: load the held-out split, evaluate each model on it and on each benchmark of `eval.benchmarks`, write
`records.jsonl` (one line per model, set and problem), `results.json` and `report.md` (the table the console prints
at the end of `coldstart run`).

A model's records are also kept in `.eval-cache/` beside the run directory, under a hash of everything they depend
on: the model folder's files, the problems, the eval settings, the code and library versions (and the seed
when sampling). Runs side by side that hand over the same model, as the base start does for every seed of
`coldstart compare`, grade it once.
"""

from __future__ import annotations

import functools
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from coldstart import cards, tracking
from coldstart.benchmarks import held_out, load_set
from coldstart.config import Config, settings
from coldstart.drift import held_out_drift
from coldstart.eval.evaluate import grade, summarize_records
from coldstart.eval.report import results_table
from coldstart.generation import VllmGenerator, generate
from coldstart.models import model_fingerprint, resolve_model_path
from coldstart.runs import RunDir, atomic_write_text, json_sha256, versions, write_jsonl
from coldstart.runtime import Runtime
from coldstart.statistics import paired_difference

logger = logging.getLogger(__name__)


def run_models(cfg: Config, run_dir: RunDir) -> dict[str, tuple[str, Path]]:
    """The models to evaluate by arm, each with what identifies it for re-run decisions: 'base' (with
    `eval.base`, unless the warm-up is 'none' and so hands over the base model itself), 'warmup' (the handoff
    checkpoint, else the warm-up's) and 'rl', the last two once their stage has finished."""
    models = {}
    if cfg.eval.base and cfg.warmup.loss != "none":
        base = resolve_model_path(cfg.model.name_or_path)
        models["base"] = (model_fingerprint(base), Path(base))
    if run_dir.finished("handoff"):
        models["warmup"] = (run_dir.finished("handoff")["outputs_sha256"], run_dir.stage_dir("handoff") / "model")
    elif run_dir.finished("warmup") and (run_dir.stage_dir("warmup") / "final").is_dir():
        models["warmup"] = (run_dir.finished("warmup")["outputs_sha256"], run_dir.stage_dir("warmup") / "final")
    if run_dir.finished("rl"):
        models["rl"] = (run_dir.finished("rl")["outputs_sha256"], run_dir.stage_dir("rl") / "final")
    return models


@contextmanager
def generator(cfg: Config, model_dir: Path, runtime: Runtime) -> Iterator[Callable[..., list]]:
    """A model folder's generator for `grade`, on this process's device: vLLM (`eval.use_vllm`; the engine is
    freed on exit) or HF `generate` on the loaded model."""
    e = cfg.eval
    tokenizer = runtime.load_tokenizer(model_dir, cfg.model.trust_remote_code)
    if e.use_vllm:
        vllm = VllmGenerator(str(model_dir), tokenizer, e.vllm_gpu_memory_utilization, cfg.seed,
                             runtime.compute_dtype(cfg.model), runtime.num_processes)
        try:
            yield vllm
        finally:
            vllm.close()
        return
    yield functools.partial(generate, runtime.load_model(cfg.model, model_dir), tokenizer, batch_size=e.batch_size)


def evaluate_with(cfg: Config, generate_fn: Callable[..., list], problems,
                  runtime: Runtime) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`grade` with the eval section's settings, each process grading its share of the problems, and the figures
    over all of them."""
    e = cfg.eval

    records = runtime.map(
        lambda part: grade(generate_fn, part, e.max_new_tokens, e.num_samples, e.temperature, cfg.seed, e.top_p),
        problems,
    )
    return records, summarize_records(records)


def cache_key(cfg: Config, model_dir: Path, problems, dtype: str) -> str:
    """What a model's grades on `problems` depend on: its files, the problems, how it is loaded (`model`:
    remote code; `dtype`, the one it computes in), the eval settings, the code and library versions, and the seed
    when sampling."""
    eval_settings = {k: v for k, v in settings(cfg.eval).items() if k not in ("base", "benchmarks")}  # not the set
    loaded = {**settings(cfg.model), "dtype": dtype}
    return json_sha256({
        "model": model_fingerprint(str(model_dir)), "loaded": loaded, "problems": problems.to_list(),
        "eval": eval_settings, "seed": cfg.seed if cfg.eval.num_samples else None, "versions": versions(),
    })


def evaluate_cached(cfg: Config, model_dir: Path, problems, runtime: Runtime,
                    reuse: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`evaluate_with` on one model folder, read back from the eval cache when the same model was graded on the
    same problems with the same settings and code (unless `reuse` is off: `--force eval` grades again, and
    replaces the entry). The main process decides and writes; every process grades its share."""
    cached = cfg.run_dir.parent / ".eval-cache" / f"{cache_key(cfg, model_dir, problems, runtime.compute_dtype(cfg.model))}.json"
    saved = json.loads(cached.read_text()) if runtime.is_main and reuse and cached.is_file() else None
    saved = runtime.from_main(saved)
    if saved is not None:
        logger.info("eval: %s was graded on these problems before (%s), reused", model_dir, cached)
        return saved["records"], saved["metrics"]
    with generator(cfg, model_dir, runtime) as generate_fn:
        records, metrics = evaluate_with(cfg, generate_fn, problems, runtime)
    if runtime.is_main:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cached, json.dumps({"model": str(model_dir), "records": records, "metrics": metrics}) + "\n")
    return records, metrics


def rl_drift(cfg: Config, runtime: Runtime, problems, warmed_dir: Path, rl_dir: Path) -> dict[str, Any]:
    """How far GRPO moved the policy: KL(after GRPO || warmed) and the entropy per token, on the GRPO policy's
    samples for the first `eval.drift_prompts` held-out problems (`coldstart.drift`), each process its share."""
    tokenizer = runtime.load_tokenizer(rl_dir, cfg.model.trust_remote_code)
    policy, reference = runtime.load_model(cfg.model, rl_dir), runtime.load_model(cfg.model, warmed_dir)
    return held_out_drift(runtime, policy, reference, tokenizer, problems, cfg.eval, cfg.seed)


def run(cfg: Config, run_dir: RunDir, runtime: Runtime, force: bool = False) -> dict[str, Any]:
    models = run_models(cfg, run_dir)
    if "warmup" not in models:
        run_dir.require("warmup", "eval")

    def body(work: Path) -> dict[str, Any]:
        problems, stats = held_out(cfg)
        results: dict[str, Any] = {"models": {}, "data": stats.to_dict()}
        correct, lines = {}, []
        for arm, (_, model_dir) in models.items():
            records, metrics = evaluate_cached(cfg, model_dir, problems, runtime, reuse=not force)
            results["models"][arm] = {"path": str(model_dir), **metrics}
            correct[arm] = [float(r["correct"]) for r in records]
            lines += [{"model": arm, **r} for r in records]
        for name in cfg.eval.benchmarks:  # records of another set carry its name; the held-out split's carry none
            benchmark = load_set(cfg, name, cfg.eval.num_problems)
            results.setdefault("benchmarks", {})[name] = {}
            for arm, (_, model_dir) in models.items():
                records, metrics = evaluate_cached(cfg, model_dir, benchmark, runtime, reuse=not force)
                results["benchmarks"][name][arm] = metrics
                lines += [{"model": arm, "set": name, **r} for r in records]
        if "rl" in models and cfg.eval.drift_prompts:
            results["drift"] = {"rl": rl_drift(cfg, runtime, problems, models["warmup"][1], models["rl"][1])}
        if not runtime.is_main:
            return {}
        write_jsonl(work / "records.jsonl", lines)
        if "base" in correct:
            results["warmup_gain"] = paired_difference(correct["warmup"], correct["base"])
        if "rl" in correct:
            results["rl_gain"] = paired_difference(correct["rl"], correct["warmup"])
        (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (work / "report.md").write_text(results_table(results))
        tracking.log_summary(cfg, "eval", {k: v for k, v in results.items() if k != "data"})
        return results

    fingerprint = {
        "seed": cfg.seed,
        "models": {arm: identity for arm, (identity, _) in models.items()},
        "data": settings(cfg.data),
        "eval": settings(cfg.eval),
    }
    entry = run_dir.run_stage("eval", fingerprint, body, force=force)
    cards.refresh(cfg, run_dir)  # the graded folders' cards with their results
    return entry
