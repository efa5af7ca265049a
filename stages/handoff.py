"""Handoff stage: the warmed checkpoint, made ready for RL and vLLM, checked, and measured against the demonstrations.

Recipe: pick the warm-up checkpoint (`warmup/final/`, or with `select_checkpoint` the one with the best pass@k on RL
prompts), load it (merging LoRA adapters), restore `use_cache`, write every stop id into the generation config,
save `model/` in HF format, reload it as a user would, run the end-of-turn checks, then the mismatch report:
demonstration compatibility under the base and the warmed policy, and rollouts of the warmed policy on the RL
prompts with GRPO's sampling settings. With `curate`, the rollouts cover the whole RL prompt pool and `prompts.jsonl`
keeps the prompts whose pass rate carries a signal, which the RL stage trains on. A failed check, or rollouts that
mostly run to the length cap, stop the pipeline with what to change.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from coldstart import cards, tracking
from coldstart.benchmarks import held_out
from coldstart.checkpoint import check_checkpoint, id_list, stop_token_ids
from coldstart.compatibility import mean_token_entropy, score_records, use_fused_head
from coldstart.config import Config, settings
from coldstart.curation import KEPT, curate, curation_summary, pick_checkpoint
from coldstart.data import load_samples, rl_pool
from coldstart.drift import held_out_drift
from coldstart.errors import ColdstartError
from coldstart.generation import generate
from coldstart.grading import has_boxed_answer, is_correct
from coldstart.lengths import apply_length_policy
from coldstart.mismatch import build_report, render_markdown, rollout_stats
from coldstart.models import has_adapters, resolve_model_path
from coldstart.plots import mismatch_figure, pass_rate_histogram
from coldstart.runs import RunDir, link_if_identical, read_jsonl, tree_sha256, write_jsonl
from coldstart.runtime import Runtime
from coldstart.temperature import calibrate
from coldstart.training import checkpoint_step, sealed_checkpoints


def export(cfg: Config, runtime: Runtime, final: Path, out: Path) -> dict[str, Any]:
    """Write the warmed model in `final` (LoRA adapters are merged) to `out` as a self-contained HF checkpoint;
    returns what was changed."""
    tokenizer = runtime.load_tokenizer(final, cfg.model.trust_remote_code)
    model = runtime.load_model(cfg.model, final, master=True)  # saved as trained
    model.config.use_cache = True
    model.generation_config.use_cache = True
    added: list[int] = []
    if cfg.handoff.add_stop_ids:
        listed = id_list(model.generation_config.eos_token_id)
        added = [i for i in stop_token_ids(tokenizer) if i not in listed]
        model.generation_config.eos_token_id = listed + added
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    for linked in out.glob("*.safetensors"):  # a resumed attempt's links: saving writes files in place
        linked.unlink()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if cfg.warmup.loss != "none":  # unchanged warmed weights (no LoRA merged): linked, not stored twice; never
        for weights in out.glob("*.safetensors"):  # into a base model's folder, which its owner may re-save in place
            link_if_identical(weights, final / weights.name)
    return {"merged_lora": has_adapters(final), "added_stop_ids": added}


def _rollouts(cfg: Config, runtime: Runtime, model, tokenizer, prompts, seed: int, temperature: float,
              entropy: bool = True) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Each prompt's group of GRPO-sampled completions at `temperature`, graded (each process rolls out its share
    of the prompts)."""
    groups = runtime.map(lambda part: _rollout_groups(cfg, model, tokenizer, part, seed, temperature, entropy), prompts)
    records = [{"id": sample_id, **r} for sample_id, group in zip(prompts["id"], groups) for r in group]
    return [[{k: v for k, v in r.items() if k != "completion"} for r in group] for group in groups], records


def _rollout_groups(cfg: Config, model, tokenizer, prompts, seed: int, temperature: float,
                    entropy: bool) -> list[list[dict[str, Any]]]:
    rl = cfg.rl
    outputs = generate(
        model, tokenizer, prompts["prompt"], num_samples=rl.num_generations, max_new_tokens=rl.max_completion_length,
        temperature=temperature, top_p=rl.top_p, top_k=rl.trainer.get("top_k", 0), batch_size=cfg.handoff.batch_size,
        seed=seed,
    )
    groups = [
        [{"completion": c.text, "correct": is_correct(sample["answer"], c.text, rl.reward_timeout),
          "boxed": has_boxed_answer(c.text), "finished": c.finished, "num_tokens": c.num_tokens} for c in completions]
        for sample, completions in zip(prompts, outputs)
    ]
    if entropy:  # one more forward over every rollout
        entropies = iter(mean_token_entropy(model, tokenizer, [
            {"prompt": sample["prompt"],
             "completion": [{"role": "assistant", "content": c.text}] if isinstance(sample["prompt"], list) else c.text}
            for sample, completions in zip(prompts, outputs) for c in completions
        ], batch_size=cfg.handoff.batch_size))
        for group in groups:
            for r in group:
                r["entropy"] = next(entropies)
    return groups


def fixed_temperature(cfg: Config) -> float:
    """The rollouts' temperature before the handoff calibrates one: rl.temperature, or 1 with auto (checkpoint
    selection's, whose candidates are not yet the policy that is calibrated)."""
    return 1.0 if cfg.rl.temperature == "auto" else cfg.rl.temperature


def calibrate_temperature(cfg: Config, runtime: Runtime, model, tokenizer, prompts) -> dict[str, Any]:
    """`rl.temperature: auto`: the warmed policy rolled out on `prompts` at each of `handoff.temperatures`, with
    another seed than the report's (`selection_seed`: the report measures the choice on other samples), and the
    temperature GRPO samples at (`coldstart.temperature.calibrate`)."""
    def correct_at(temperature: float) -> list[int]:
        groups, _ = _rollouts(cfg, runtime, model, tokenizer, prompts, selection_seed(cfg), temperature, entropy=False)
        return rollout_stats(groups, cfg.rl.max_completion_length)["correct_per_prompt"]

    return calibrate(correct_at, cfg.handoff.temperatures, cfg.rl.num_generations, cfg.handoff.target_mixed_share)


def selection_seed(cfg: Config) -> int:
    """The sampling seed of checkpoint selection's rollouts: not the report's, whose figures would otherwise be the
    very ones the chosen checkpoint won on."""
    return cfg.seed + 1


def rollout_prompts(cfg: Config, train):
    """The report's RL prompts and checkpoint selection's, drawn from the RL prompt pool without overlap where the
    pool is large enough (the selection's are then the next ones after the report's): the report measures the
    chosen checkpoint on prompts it was not chosen on, or at least with other samples (`selection_seed`)."""
    report = rl_pool(train, cfg.data, cfg.handoff.report_prompts, cfg.seed)
    s = cfg.handoff.select_checkpoint
    if not s.enabled or cfg.warmup.loss == "none":
        return report, None
    pool = rl_pool(train, cfg.data, cfg.rl.num_prompts, cfg.seed)
    first = min(len(report), max(0, len(pool) - s.prompts))
    return report, pool.select(range(first, min(first + s.prompts, len(pool))))


def select_checkpoint(cfg: Config, runtime: Runtime, warmup_dir: Path, final_step: int,
                      prompts) -> tuple[Path, list[dict[str, Any]]]:
    """The warm-up folder GRPO starts from, by `curation.pick_checkpoint` over the last saved checkpoints and the
    final model, each rolled out on `prompts`; and the table of candidates."""
    s = cfg.handoff.select_checkpoint
    saved = [p for p in sealed_checkpoints(warmup_dir) if checkpoint_step(p) < final_step]
    folders = [*(saved[-s.candidates:] if s.candidates else saved), warmup_dir / "final"]
    table = []
    for folder in folders:
        model = runtime.load_model(cfg.model, folder)
        tokenizer = runtime.load_tokenizer(folder, cfg.model.trust_remote_code)
        groups, _ = _rollouts(cfg, runtime, model, tokenizer, prompts, selection_seed(cfg), fixed_temperature(cfg))
        stats = rollout_stats(groups, cfg.rl.max_completion_length)
        step = final_step if folder.name == "final" else checkpoint_step(folder)
        table.append({"name": folder.name, "step": step, "pass@1": stats["pass@1"], "pass@k": stats[f"pass@{stats['k']}"],
                      "zero_variance": stats["zero_variance"], "k": stats["k"]})
    picked = pick_checkpoint(table)
    for i, row in enumerate(table):
        row["picked"] = i == picked
    return folders[picked], table


def curate_prompts(cfg: Config, runtime: Runtime, model, tokenizer, pool, seen: dict[str, int],
                   temperature: float) -> tuple[list[int], list[str]]:
    """Roll out the pool prompts the report did not cover and choose the prompts GRPO trains on: each pool
    prompt's correct count and why it is kept or dropped (`write_curation` writes them)."""
    c, k = cfg.handoff.curate, cfg.rl.num_generations
    rest = [i for i, sample_id in enumerate(pool["id"]) if sample_id not in seen]
    counts = dict(seen)
    if rest:
        more = pool.select(rest)
        groups, _ = _rollouts(cfg, runtime, model, tokenizer, more, cfg.seed, temperature)
        counts.update(zip(more["id"], rollout_stats(groups, cfg.rl.max_completion_length)["correct_per_prompt"]))
    correct = [counts[i] for i in pool["id"]]
    return correct, curate(correct, k, c.pass_rate_above, c.pass_rate_below, c.keep_rest, cfg.seed)


def write_curation(cfg: Config, pool, correct: list[int], reasons: list[str], work: Path) -> dict[str, Any]:
    """`prompts.jsonl` (each prompt's correct count, pass rate and why it is kept or dropped) and `pass_rates.png`."""
    k = cfg.rl.num_generations
    write_jsonl(work / "prompts.jsonl", [
        {"id": i, "correct": n, "k": k, "pass_rate": n / k, "kept": r in KEPT, "reason": r}
        for i, n, r in zip(pool["id"], correct, reasons)
    ])
    pass_rate_histogram(correct, [r in KEPT for r in reasons], k, work / "pass_rates.png")
    return curation_summary(correct, k, reasons)


def _demonstrations(cfg: Config, runtime: Runtime, run_dir: RunDir, model, tokenizer, train, base_model):
    """Demonstration scores under the warmed policy, and under the base (from `score` when it ran, else now, from
    `base_model()`), for the loaded training split `train`."""
    # the demonstrations the warm-up trained on ('error' stopped the warm-up at any longer one)
    policy = "drop" if cfg.warmup.too_long == "error" else cfg.warmup.too_long
    train, _ = apply_length_policy(train, tokenizer, cfg.warmup.max_length, policy)
    if cfg.handoff.report_demos:
        train = train.select(range(min(cfg.handoff.report_demos, len(train))))
    fused = use_fused_head(cfg.warmup.logprobs)

    def scores(model, tokenizer):
        return runtime.map(lambda part: score_records(model, tokenizer, part, cfg.warmup.max_length, fused), train)

    warmed = scores(model, tokenizer)
    if run_dir.finished("score"):
        by_id = {r["id"]: r for r in read_jsonl(run_dir.stage_dir("score") / "scores.jsonl")}
        base = [by_id[i] for i in train["id"] if i in by_id]
    else:
        path = resolve_model_path(cfg.model.name_or_path)
        base = scores(base_model(), runtime.load_tokenizer(path, cfg.model.trust_remote_code))
    return base, warmed


def _drift_measured(cfg: Config) -> bool:
    return bool(cfg.eval.drift_prompts) and cfg.warmup.loss != "none"


def _drift(cfg: Config, runtime: Runtime, model, tokenizer, base) -> dict[str, Any]:
    """How far the warm-up moved the policy: KL(warmed || base) and the entropy per token, on the warmed policy's
    samples for the first `eval.drift_prompts` held-out prompts, and the base model's entropy on its own samples
    (`coldstart.drift`)."""
    problems, _ = held_out(cfg)
    return {"warmed": held_out_drift(runtime, model, base, tokenizer, problems, cfg.eval, cfg.seed),
            "base": held_out_drift(runtime, base, None, tokenizer, problems, cfg.eval, cfg.seed)}


def run(cfg: Config, run_dir: RunDir, runtime: Runtime, force: bool = False) -> dict[str, Any]:
    warmup_dir = run_dir.require("warmup", "handoff")
    score_dir = run_dir.stage_dir("score") if run_dir.finished("score") else None

    def body(work: Path) -> dict[str, Any]:
        source = warmup_dir / "final" if cfg.warmup.loss != "none" else Path(resolve_model_path(cfg.model.name_or_path))
        # one load of the training split serves the demonstrations and every RL prompt sample drawn from it
        train, _ = load_samples(cfg.data, "train", cfg.seed)
        candidates = None
        prompts, selection = rollout_prompts(cfg, train)
        if selection is not None:
            source, candidates = select_checkpoint(cfg, runtime, warmup_dir,
                                                   run_dir.finished("warmup")["metrics"]["steps"], selection)
        changes = export(cfg, runtime, source, work / "model") if runtime.is_main else None
        changes = runtime.from_main(changes)  # every process loads the exported folder once it is written
        tokenizer = runtime.load_tokenizer(work / "model", cfg.model.trust_remote_code)
        model = runtime.load_model(cfg.model, work / "model")  # reloaded from the folder, as RL and users load it
        failures = check_checkpoint(tokenizer, model.config, model.generation_config, isinstance(prompts[0]["prompt"], list))
        calibration = (calibrate_temperature(cfg, runtime, model, tokenizer, prompts)
                       if cfg.rl.temperature == "auto" else None)
        temperature = calibration["chosen"] if calibration else cfg.rl.temperature
        groups, rollouts = _rollouts(cfg, runtime, model, tokenizer, prompts, cfg.seed, temperature)
        stats = rollout_stats(groups, cfg.rl.max_completion_length)
        chosen = pool = None  # each pool prompt's correct count and why it is kept or dropped
        if cfg.handoff.curate.enabled:
            pool = rl_pool(train, cfg.data, cfg.rl.num_prompts, cfg.seed)
            seen = dict(zip(prompts["id"], stats["correct_per_prompt"]))
            chosen = curate_prompts(cfg, runtime, model, tokenizer, pool, seen, temperature)
        # the base model, loaded once for what needs it (its demonstration scores without `score`, the drift)
        base_model = functools.cache(lambda: runtime.load_model(cfg.model, resolve_model_path(cfg.model.name_or_path)))
        base, warmed = _demonstrations(cfg, runtime, run_dir, model, tokenizer, train, base_model)
        drift = _drift(cfg, runtime, model, tokenizer, base_model()) if _drift_measured(cfg) else None
        finished = 1 - stats["truncated"]
        if finished < cfg.handoff.min_finished:
            failures.append(
                f"smoke test: only {finished:.0%} of the rollouts ended by themselves within "
                f"rl.max_completion_length={cfg.rl.max_completion_length} (handoff.min_finished="
                f"{cfg.handoff.min_finished}); check that the warm-up trained on the end-of-turn token, or raise "
                "rl.max_completion_length"
            )
        if runtime.is_main:
            curated = write_curation(cfg, pool, *chosen, work) if chosen is not None else None
            report = build_report(base, warmed, stats, curated, candidates, calibration, drift)
            (work / "mismatch.json").write_text(json.dumps(report, indent=2) + "\n")
            (work / "mismatch.md").write_text(render_markdown(report))
            mismatch_figure(base, warmed, report["rollouts"]["correct_per_prompt"], report["rollouts"]["k"],
                            work / "mismatch.png")
            write_jsonl(work / "rollouts.jsonl", rollouts)
            write_jsonl(work / "demonstrations.jsonl", [{"policy": "warmed", **r} for r in warmed]
                        + [{"policy": "base", **r} for r in base])
            summary = {**changes, "stop_ids": stop_token_ids(tokenizer), "checks_failed": failures,
                       "finished_rate": finished, "checkpoint": source.name, "checkpoints": candidates,
                       "curation": curated, "temperature": temperature, "calibration": calibration, "drift": drift}
            (work / "handoff.json").write_text(json.dumps(summary, indent=2) + "\n")
        if failures:  # every process stops: none may wait for a stage the others left
            raise ColdstartError(f"handoff: {'; '.join(failures)} (report in {work})")
        if not runtime.is_main:
            return {}
        tracking.log_summary(cfg, "handoff", {"finished_rate": finished, **report})
        return {**summary, "rollouts": {k: v for k, v in report["rollouts"].items() if k != "correct_per_prompt"},
                "verdicts": report["verdicts"]}

    fingerprint = {
        "seed": cfg.seed,
        "warmup": run_dir.finished("warmup").get("outputs_sha256"),
        "score": tree_sha256(score_dir) if score_dir else None,
        "model": settings(cfg.model),
        # the calibration's settings matter only where it runs
        "handoff": {k: v for k, v in settings(cfg.handoff).items()
                    if cfg.rl.temperature == "auto" or k not in ("temperatures", "target_mixed_share")},
        "data": settings(cfg.data),
        **({"drift": {k: getattr(cfg.eval, k) for k in ("drift_prompts", "num_problems", "max_new_tokens")}}
           if _drift_measured(cfg) else {}),
        "rl_sampling": {k: getattr(cfg.rl, k) for k in ("num_generations", "max_completion_length", "temperature", "top_p",
                                                         "num_prompts")}
        | {"top_k": cfg.rl.trainer.get("top_k", 0)},
    }
    entry = run_dir.run_stage("handoff", fingerprint, body, force=force)
    cards.refresh(cfg, run_dir, ("handoff",))
    return entry
