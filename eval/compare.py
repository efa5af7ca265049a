"""The comparison users run: {base, sft, dft, cadft} x {warm-up only, warm-up + GRPO}, same data, budget and seeds.

Each start is an ordinary run directory under `<output_dir>/<name>/` (so finished stages are shared and skipped on a
re-run); its eval stage grades the warmed and the RL model on the same held-out problems. This module gathers those
records and computes, with 95% intervals that count both the training seeds and the problems
(`statistics.seed_problem_interval`): accuracy per arm, the RL gain per start, and paired differences between
starts, problem by problem; with one seed, also McNemar's exact p-value. A difference is called significant only
when its interval excludes 0.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from coldstart.config import Config
from coldstart.runs import RunDir, read_jsonl
from coldstart.statistics import paired_difference, seed_problem_interval

ARM_NAMES = {"none": "base", "sft": "sft", "dft": "dft", "cadft": "cadft"}


def start_config(cfg: Config, start: str, seed: int) -> Config:
    """The config of one start: the shared config with its warm-up loss and training seed; data fixed by `data.seed`;
    its eval grades its own models only."""
    data_seed = cfg.data.seed if cfg.data.seed is not None else cfg.seed
    return dataclasses.replace(
        cfg,
        name=f"{cfg.name}/{ARM_NAMES[start]}-seed{seed}",
        seed=seed,
        data=dataclasses.replace(cfg.data, seed=data_seed),
        warmup=dataclasses.replace(cfg.warmup, loss=start),
        eval=dataclasses.replace(cfg.eval, base=False),  # the 'none' start is the base model
    )


def run_matrix(cfg: Config, run_stage: dict[str, Any], force: list[str]) -> dict[str, RunDir]:
    """Run (or skip, when finished) every start x seed through warm-up, handoff, RL and eval."""
    runs = {}
    for seed in cfg.compare.seeds:
        for start in cfg.compare.starts:
            sub = start_config(cfg, start, seed)
            run_dir = RunDir(sub.run_dir)
            forced = False
            stages = ["warmup", "handoff"] + (["rl"] if cfg.compare.rl else []) + ["eval"]
            for stage in stages:
                forced = forced or stage in force
                run_stage[stage](sub, run_dir, force=forced)
            runs[f"{ARM_NAMES[start]}-seed{seed}"] = run_dir
    return runs


def _correct(run_dir: RunDir) -> dict[str, list[float]]:
    by_model: dict[str, list[tuple[str, float]]] = {}
    for r in read_jsonl(run_dir.stage_dir("eval") / "records.jsonl"):
        by_model.setdefault(r["model"], []).append((r["id"], float(r["correct"])))
    return {model: [c for _, c in sorted(rows)] for model, rows in by_model.items()}


def _interval(per_seed: list[list[float]], key: str) -> dict[str, Any]:
    """The mean of per-problem scores (or differences) over seeds and problems, with an interval that counts both
    (`statistics.seed_problem_interval`; one seed: the bootstrap over problems)."""
    r = seed_problem_interval(per_seed)
    return {key: r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "seeds": r["seeds"]}


def _significant(d: dict[str, Any]) -> bool:
    return d["ci_low"] > 0 or d["ci_high"] < 0


def analyse(cfg: Config, runs: dict[str, RunDir]) -> dict[str, Any]:
    """Accuracy per arm, RL gain per start and the paired comparisons, from the runs' eval records."""
    starts = [ARM_NAMES[s] for s in cfg.compare.starts]
    seeds = cfg.compare.seeds
    correct = {(start, seed): _correct(runs[f"{start}-seed{seed}"]) for start in starts for seed in seeds}
    models = ["warmup"] + (["rl"] if cfg.compare.rl else [])

    def arm(start: str, model: str) -> str:
        return start if model == "warmup" else f"{start}+grpo"

    accuracy = {}
    for start in starts:
        for model in models:
            accuracy[arm(start, model)] = _interval([correct[(start, seed)][model] for seed in seeds], "accuracy")

    def paired(a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any]:
        diffs = [[x - y for x, y in zip(correct[(a[0], seed)][a[1]], correct[(b[0], seed)][b[1]])] for seed in seeds]
        out = _interval(diffs, "difference")
        if len(seeds) == 1:  # McNemar's exact test pairs the outcomes of one seed
            out["mcnemar_p"] = paired_difference(correct[(a[0], seeds[0])][a[1]], correct[(b[0], seeds[0])][b[1]])["mcnemar_p"]
        out["significant"] = _significant(out)
        return out

    rl_gain = {start: paired((start, "rl"), (start, "warmup")) for start in starts} if cfg.compare.rl else {}
    comparisons = {}
    target = "cadft" if "cadft" in starts else starts[-1]
    for other in starts:
        if other == target:
            continue
        for model in models:
            comparisons[f"{arm(target, model)} vs {arm(other, model)}"] = paired((target, model), (other, model))
        if cfg.compare.rl:
            # difference of RL gains, problem by problem: (t_rl - t_w) - (o_rl - o_w)
            diffs = []
            for seed in seeds:
                t, o = correct[(target, seed)], correct[(other, seed)]
                diffs.append([(tr - tw) - (orl - ow) for tr, tw, orl, ow in zip(t["rl"], t["warmup"], o["rl"], o["warmup"])])
            out = _interval(diffs, "difference")
            out["significant"] = _significant(out)
            comparisons[f"RL gain of {target} vs {other}"] = out
    signal = {f"{start}-seed{seed}": _signal(runs[f"{start}-seed{seed}"]) for start in starts for seed in seeds}
    handoff = {"curate": cfg.handoff.curate.enabled, "select_checkpoint": cfg.handoff.select_checkpoint.enabled}
    return {"arms": accuracy, "rl_gain": rl_gain, "comparisons": comparisons, "seeds": seeds,
            "problems": len(next(iter(correct.values()))["warmup"]), "signal": signal, "handoff": handoff}


def _signal(run_dir: RunDir) -> dict[str, Any]:
    """What GRPO had to learn from in one run: zero-variance groups in the handoff's rollouts and during GRPO, and
    the prompts curation kept."""
    stages = run_dir.manifest()["stages"]
    handoff = stages.get("handoff", {}).get("metrics", {})
    curation = handoff.get("curation") or {}
    rollouts = handoff.get("rollouts", {})
    return {
        "pass@1": rollouts.get("pass@1"),
        "pass@k": rollouts.get(f"pass@{rollouts.get('k')}"),
        "k": rollouts.get("k"),
        "entropy": rollouts.get("entropy"),
        "mean_length": rollouts.get("mean_length"),
        "clipped": rollouts.get("truncated"),
        "pre_rl_zero_variance": curation.get("zero_variance_pool", handoff.get("rollouts", {}).get("zero_variance")),
        "kept": curation.get("kept"),
        "pool": curation.get("pool"),
        "checkpoint": handoff.get("checkpoint"),
        "rl_zero_variance": stages.get("rl", {}).get("metrics", {}).get("zero_variance_share_mean"),
    }


def render(results: dict[str, Any]) -> str:
    """The comparison as Markdown: tables, then what is and is not supported by the intervals."""
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = ["# Did RL gain more from a CADFT start?", "",
             f"{results['problems']} held-out problems, seeds {results['seeds']}; 95% intervals "
             f"({'bootstrap over problems' if len(results['seeds']) == 1 else 'seeds and problems: variance components, Welch-Satterthwaite t'}).", "",
             "## Accuracy per arm", "", "| arm | accuracy % | 95% CI |", "|---|---|---|"]
    for name, a in results["arms"].items():
        lines.append(f"| {name} | {pct(a['accuracy'])} | [{pct(a['ci_low'])}, {pct(a['ci_high'])}] |")
    if results["rl_gain"]:
        lines += ["", "## RL gain (warm-up + GRPO minus warm-up)", "",
                  "| start | gain (points) | 95% CI | McNemar p | significant |", "|---|---|---|---|---|"]
        for start, g in results["rl_gain"].items():
            p = f"{g['mcnemar_p']:.3f}" if "mcnemar_p" in g else "-"
            lines.append(f"| {start} | {pct(g['difference'])} | [{pct(g['ci_low'])}, {pct(g['ci_high'])}] | {p} | "
                         f"{'yes' if g['significant'] else 'no'} |")
    lines += ["", "## Paired comparisons", "", "| comparison | difference (points) | 95% CI | McNemar p | significant |",
              "|---|---|---|---|---|"]
    for name, d in results["comparisons"].items():
        p = f"{d['mcnemar_p']:.3f}" if "mcnemar_p" in d else "-"
        lines.append(f"| {name} | {pct(d['difference'])} | [{pct(d['ci_low'])}, {pct(d['ci_high'])}] | {p} | "
                     f"{'yes' if d['significant'] else 'no'} |")
    if results.get("signal"):
        on = [name for name, enabled in results.get("handoff", {}).items() if enabled]
        lines += ["", "## What GRPO had to learn from", "",
                  f"Handoff: {', '.join(on) if on else 'RL prompts and warm-up checkpoint as they are'} (the same "
                  "for every start). Zero-variance: the share of groups whose rewards are all equal.", "",
                  "Before RL: the warmed policy's rollouts on RL prompts with GRPO's sampling settings (the handoff's).", "",
                  "| run | pass@1 | pass@k | zero-variance before RL | entropy (nats) | length | clipped | prompts kept "
                  "| checkpoint | zero-variance during GRPO |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        share = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
        number = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
        for name, s in results["signal"].items():
            kept = "all" if s.get("kept") is None else f"{s['kept']} of {s['pool']}"
            lines.append(
                f"| {name} | {share(s.get('pass@1'))} | {share(s.get('pass@k'))} | {share(s['pre_rl_zero_variance'])} | "
                f"{number(s.get('entropy'), '.3f')} | {number(s.get('mean_length'), '.1f')} | {share(s.get('clipped'))} "
                f"| {kept} | {s['checkpoint'] or '-'} | {share(s['rl_zero_variance'])} |"
            )
    lines += ["", "## What the intervals support", ""]
    significant = [n for n, d in results["comparisons"].items() if d["significant"]]
    for name, d in results["comparisons"].items():
        direction = "higher" if d["difference"] > 0 else "lower"
        if d["significant"]:
            lines.append(f"- {name}: {direction} by {pct(abs(d['difference']))} points, and the interval excludes 0.")
        else:
            lines.append(f"- {name}: {pct(d['difference'])} points, but the interval includes 0: no difference is shown.")
    if not significant:
        lines.append("- No comparison is significant at this budget: this run does not show that any start is better.")
    return "\n".join(lines) + "\n"


def compare_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / cfg.name / "compare"
