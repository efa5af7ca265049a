"""The comparison users run: {base, sft, dft, cadft} x {warm-up only, warm-up + GRPO}, same data, budget and seeds.

Each start is an ordinary run directory under `<output_dir>/<name>/` (so finished stages are shared and skipped on a
re-run); its eval stage grades the warmed and the RL model on the same held-out problems. This module gathers those
records and computes, with 95% intervals that count both the training seeds and the problems
(`statistics.seed_problem_interval`): accuracy per arm, the RL gain per start, and paired differences between
starts, problem by problem (each problem scored by its greedy correctness, or by its avg@k where the eval sampled);
with one seed and greedy scores, also McNemar's exact p-value. A difference is called significant only
when its interval excludes 0. Each run's diagnostics before GRPO (the handoff's rollouts of the warmed policy on RL
prompts) go with its RL gain across runs by Spearman's rank correlation (`statistics.rank_associations`). It also
measures the paper's other two claims: the warm-up's stability (its curves per run, and `coldstart mechanism` at
fixed policies with `compare.mechanism`) and generalization (the sets of `eval.benchmarks`, each out of the
training distribution), and reads each claim's verdict off its interval (`claims`). `coldstart.eval.report` renders all of it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from coldstart.config import Config, dump_config, settings, start_parts
from coldstart.errors import ColdstartError
from coldstart.grading import is_correct
from coldstart.models import model_fingerprint
from coldstart.runs import RunDir, json_sha256, read_jsonl, versions
from coldstart.stability import curve_stability
from coldstart.statistics import (
    adjusted_difference,
    equivalence_test,
    mean_present,
    minimum_detectable_effect,
    paired_difference,
    pass_at_k,
    rank_associations,
    seed_problem_interval,
)

def arm_name(start: str) -> str:
    """A start's name in the results: the start itself, 'base' for the base model ('none')."""
    return "base" if start == "none" else start


def start_config(cfg: Config, start: str, seed: int) -> Config:
    """The config of one start: the shared config with its warm-up loss (rewriting on only for a '-rewrite' start,
    so that a plain cadft start measures reweighting alone), its GRPO temperature ('-matched': calibrated at the
    handoff) and training seed; data fixed by `data.seed`; its eval grades its own models only."""
    loss, variants = start_parts(start)
    data_seed = cfg.data.seed if cfg.data.seed is not None else cfg.seed
    return dataclasses.replace(
        cfg,
        name=f"{cfg.name}/{arm_name(start)}-seed{seed}",
        seed=seed,
        data=dataclasses.replace(cfg.data, seed=data_seed),
        warmup=dataclasses.replace(cfg.warmup, loss=loss, rewrite=dataclasses.replace(
            cfg.warmup.rewrite, enabled="rewrite" in variants) if loss == "cadft" else cfg.warmup.rewrite),
        rl=dataclasses.replace(cfg.rl, temperature="auto") if "matched" in variants else cfg.rl,
        eval=dataclasses.replace(cfg.eval, base=False),  # the 'none' start is the base model
    )


def arm_stages(cfg: Config) -> list[str]:
    """The stages each start x seed runs."""
    return ["warmup", "handoff"] + (["rl"] if cfg.compare.rl else []) + ["eval"]


def run_matrix(cfg: Config, run_stage: dict[str, Any], runtime, force: list[str]) -> dict[str, RunDir]:
    """Run (or skip, when finished) every start x seed through warm-up, handoff, RL and eval."""
    runs = {}
    for seed in cfg.compare.seeds:
        for start in cfg.compare.starts:
            sub = start_config(cfg, start, seed)
            run_dir = RunDir(sub.run_dir)
            if _is_matched(start) and "warmup" not in force:  # a '-matched' start's warm-up is its sibling's
                sibling = RunDir(start_config(cfg, start.replace("-matched", ""), seed).run_dir)
                if runtime.is_main and run_dir.adopt("warmup", sibling):
                    run_dir.write_config(dump_config(sub))
                runtime.wait()
            forced = False
            for stage in arm_stages(cfg):
                forced = forced or stage in force
                run_stage[stage](sub, run_dir, runtime, force=forced)
            runs[f"{arm_name(start)}-seed{seed}"] = run_dir
    return runs


def mechanism_models(cfg: Config, runs: dict[str, RunDir]) -> dict[str, tuple[int, Path]]:
    """The models `compare.mechanism` measures, by name (`<start>@step<N>-seed<S>`, the base start
    `base@step0-seed<S>`), each with its seed: each start's warm-up checkpoint at each fraction of its steps, on
    every seed (the base model once per seed too: a seed draws its own demonstrations to measure on). A '-matched'
    start is left out: its warm-up is its loss's."""
    from coldstart.models import resolve_model_path

    out = {}
    for seed in cfg.compare.seeds:
        for start in (s for s in cfg.compare.starts if not _is_matched(s)):
            run = runs[f"{arm_name(start)}-seed{seed}"]
            if start == "none":
                out[f"base@step0-seed{seed}"] = seed, Path(resolve_model_path(cfg.model.name_or_path))
                continue
            steps = run.finished("warmup")["metrics"]["steps"]
            for fraction in cfg.compare.mechanism:
                step = round(fraction * steps)
                folder = run.stage_dir("warmup") / ("final" if step >= steps else f"checkpoint-{step}")
                if not folder.is_dir():
                    raise ColdstartError(f"compare.mechanism: {fraction:g} of the warm-up is step {step}, but {folder} "
                                         "was not kept; set warmup.keep_checkpoints: true (or weights) and a "
                                         "warmup.save_steps that divides that step")
                out[f"{arm_name(start)}@step{step}-seed{seed}"] = seed, folder
    return out


def run_mechanism(cfg: Config, runs: dict[str, RunDir], runtime) -> dict[str, Path]:
    """`coldstart mechanism` on every model of `mechanism_models` (skipped when the same folder was measured
    with the same settings); the folders of their results by name. In several processes each measures its own
    share of the policies, into their own folders, and all wait for the last."""
    from coldstart.eval import mechanism

    if not cfg.compare.mechanism:
        return {}
    models = mechanism_models(cfg, runs)
    mine = set(runtime.mine_of(list(models)))
    out = {}
    for name, (seed, folder) in models.items():
        target = compare_dir(cfg).parent / "mechanism" / name.replace("@", "-")
        out[name] = target
        if name not in mine:
            continue
        seed_cfg = start_config(cfg, cfg.compare.starts[0], seed)
        key = json_sha256({"model": model_fingerprint(str(folder)), "seed": seed_cfg.seed,
                           "minibatches": cfg.compare.mechanism_minibatches, "data": settings(cfg.data),
                           "model_settings": settings(cfg.model), "warmup": settings(cfg.warmup),
                           "versions": versions()})
        done = target / "results.json"
        if not (done.is_file() and json.loads(done.read_text()).get("key") == key):
            mechanism.run(seed_cfg, str(folder), target, cfg.compare.mechanism_minibatches, runtime, key=key)
    runtime.wait()
    return out


def study_of(cfg: Config) -> dict[str, Any]:
    """What the analysis needs to know of the study, saved with its results so that `coldstart report` can redo it
    from the runs' records: the starts (arm names), the seeds, whether GRPO ran, and the shared handoff settings."""
    return {"starts": [arm_name(s) for s in cfg.compare.starts], "seeds": list(cfg.compare.seeds), "rl": cfg.compare.rl,
            "margin": cfg.compare.margin, "primary": cfg.compare.primary,
            "handoff": {"curate": cfg.handoff.curate.enabled, "select_checkpoint": cfg.handoff.select_checkpoint.enabled}}


def _correct(run_dir: RunDir, regrade: bool = False) -> tuple[dict[str, dict[str, float]], int, int]:
    """Each model's score per problem id, from the run's eval records (`model` for the held-out split,
    `model@set` for an out-of-distribution set): its greedy correctness, or with `eval.num_samples` k its avg@k
    (the share of the k samples graded correct, as benchmark tables score); with `regrade`, the greedy completions
    graded again with the installed grader, and how many grades that changed. Also k (0: greedy)."""
    by_model: dict[str, dict[str, float]] = {}
    changed = samples = 0
    for r in read_jsonl(run_dir.stage_dir("eval") / "records.jsonl"):
        samples = r.get("num_samples", 0)
        if samples and regrade:
            raise ColdstartError(f"{run_dir.root}: records scored by avg@{samples} keep the count of correct samples, "
                                 "not the sampled completions: --regrade can only grade greedy records again")
        score = r["samples_correct"] / samples if samples else float(r["correct"])
        if regrade:
            fresh = float(is_correct(r["answer"], r["completion"]))
            changed += fresh != score
            score = fresh
        # the held-out split's scores under the model's name, another set's under model@set
        key = r["model"] if r.get("set") is None else f"{r['model']}@{r['set']}"
        by_model.setdefault(key, {})[str(r["id"])] = score
    return by_model, changed, samples


def _in_problem_order(graded: dict[tuple[str, int], dict[str, dict[str, float]]]) -> dict[tuple[str, int], dict[str, list[float]]]:
    """Every run's scores as lists in one problem order per set, so that the comparisons pair the same problems;
    runs graded on different problems are refused (pairing them by position would compare unrelated problems)."""
    first: dict[str, tuple[tuple[str, int], list[str]]] = {}
    for key, models in graded.items():
        for model, scores in models.items():
            first.setdefault(model, (key, sorted(scores)))
            (start, seed), ((first_start, first_seed), ids) = key, first[model]
            if sorted(scores) != ids:
                missing = sorted(set(ids) - set(scores))[:3]
                extra = sorted(set(scores) - set(ids))[:3]
                raise ColdstartError(
                    f"compare: {start}-seed{seed} ({model}) was graded on other problems than "
                    f"{first_start}-seed{first_seed} ({len(scores)} vs {len(ids)}; missing {missing}, extra "
                    f"{extra}): grade every run on the same held-out problems (coldstart compare --force eval)"
                )
    return {key: {model: [scores[i] for i in first[model][1]] for model, scores in models.items()}
            for key, models in graded.items()}


def _interval(per_seed: list[list[float]], key: str, bound: float) -> dict[str, Any]:
    """The mean of per-problem scores (or differences) over seeds and problems, with an interval that counts both
    (`statistics.seed_problem_interval`; one seed: the bootstrap over problems), cut to the values the mean can take:
    [0, 1] for an accuracy (`bound` 1, key "accuracy"), [-bound, bound] for a difference. With few seeds the t
    interval is wide and would otherwise reach past them; `clipped` names the ends that were cut."""
    r = seed_problem_interval(per_seed)
    low_bound = 0.0 if key == "accuracy" else -bound
    se = r["se"]  # the interval's own, before clipping: for the power and equivalence figures
    out = {key: r["mean"], "ci_low": max(r["ci_low"], low_bound), "ci_high": min(r["ci_high"], bound), "seeds": r["seeds"],
           "clipped": [end for end, cut in (("low", r["ci_low"] < low_bound), ("high", r["ci_high"] > bound)) if cut],
           "se": se, "df": r["df"], "mde": minimum_detectable_effect(se, r["df"])}
    out["significant"] = out["ci_low"] > 0 or out["ci_high"] < 0
    return out


# The warmed policy's figures on RL prompts before GRPO that may explain a start's RL gain, and one during GRPO.
BEFORE_RL = {"pass@1": "pass@1", "pass@k": "pass@k", "pre_rl_zero_variance": "zero-variance groups",
             "entropy": "mean token entropy", "mean_length": "completion length", "clipped": "clipped at max length"}
DURING_RL = {"rl_zero_variance": "zero-variance groups during GRPO"}
# How far each stage moved the policy, and how sharp it left it (coldstart/drift.py: on held-out prompts)
DRIFT = {"kl_from_base": "warm-up's KL from the base", "warmed_entropy": "entropy after warm-up",
         "kl_from_warmed": "GRPO's KL from the warmed policy", "rl_entropy": "entropy after GRPO"}


def analyse(study: dict[str, Any], runs: dict[str, RunDir], regrade: bool = False,
            mechanism: dict[str, Path] | None = None) -> dict[str, Any]:
    """Accuracy per arm (in and out of distribution), RL gain per start, the paired comparisons between starts,
    each run's warm-up stability, each run's and each start's diagnostics, how the diagnostics go with the RL gain
    across runs, the mechanism checks (`run_mechanism`'s folders) and the paper's claims, from the runs' records
    and manifests (with `regrade`, their completions graded again)."""
    starts, seeds, rl = study["starts"], study["seeds"], study["rl"]
    graded = {(start, seed): _correct(runs[f"{start}-seed{seed}"], regrade) for start in starts for seed in seeds}
    correct = _in_problem_order({key: scores for key, (scores, _, _) in graded.items()})
    ks = {k for _, _, k in graded.values()}
    if len(ks) > 1:
        raise ColdstartError(f"compare: the runs were graded with different eval.num_samples ({sorted(ks)}): "
                             "greedy and avg@k scores do not compare; evaluate every run alike (--force eval)")
    samples = ks.pop()
    models = ["warmup"] + (["rl"] if rl else [])

    def arm(start: str, model: str) -> str:
        return start if model == "warmup" else f"{start}+grpo"

    accuracy = {}
    for start in starts:
        for model in models:
            accuracy[arm(start, model)] = _interval([correct[(start, seed)][model] for seed in seeds], "accuracy", 1.0)

    def paired(a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any]:
        diffs = [[x - y for x, y in zip(correct[(a[0], seed)][a[1]], correct[(b[0], seed)][b[1]])] for seed in seeds]
        out = _interval(diffs, "difference", 1.0)
        if len(seeds) == 1 and not samples:  # McNemar's exact test pairs the 0/1 outcomes of one seed
            out["mcnemar_p"] = paired_difference(correct[(a[0], seeds[0])][a[1]], correct[(b[0], seeds[0])][b[1]])["mcnemar_p"]
        return out

    rl_gain = {start: paired((start, "rl"), (start, "warmup")) for start in starts} if rl else {}
    comparisons = {}
    pairs = compared(starts)
    for target, other in pairs:
        for model in models:
            comparisons[f"{arm(target, model)} vs {arm(other, model)}"] = paired((target, model), (other, model))
        if rl:
            # difference of RL gains, problem by problem: (t_rl - t_w) - (o_rl - o_w)
            diffs = []
            for seed in seeds:
                t, o = correct[(target, seed)], correct[(other, seed)]
                diffs.append([(tr - tw) - (orl - ow) for tr, tw, orl, ow in zip(t["rl"], t["warmup"], o["rl"], o["warmup"])])
            comparisons[f"RL gain of {target} vs {other}"] = _interval(diffs, "difference", 2.0)
    adjusted = {}
    if rl:
        def accuracies(start: str, model: str) -> list[float]:
            return [statistics.fmean(correct[(start, seed)][model]) for seed in seeds]

        for target, other in pairs:
            a = adjusted_difference(accuracies(target, "rl"), accuracies(target, "warmup"),
                                    accuracies(other, "rl"), accuracies(other, "warmup"))
            if a:
                adjusted[f"{target} vs {other}"] = a
    signal = {}
    for start in starts:
        for seed in seeds:
            scores = correct[(start, seed)]
            run = {"start": start, "seed": seed, **{f"accuracy_{m}": sum(scores[m]) / len(scores[m]) for m in models}}
            if rl:
                run["rl_gain"] = run["accuracy_rl"] - run["accuracy_warmup"]
            signal[f"{start}-seed{seed}"] = {**run, **_signal(runs[f"{start}-seed{seed}"])}
    diagnostics = {start: {key: mean_present([s[key] for s in signal.values() if s["start"] == start])
                           for key in [*BEFORE_RL, *DURING_RL, *DRIFT]} for start in starts}
    associations = {}
    if rl:
        associations = rank_associations({key: [s[key] for s in signal.values()] for key in BEFORE_RL},
                                         [s["rl_gain"] for s in signal.values()])
    curves = learning_curves(runs, starts, seeds, pairs) if rl else {}
    coverage = pass_at_k_curves(correct, starts, seeds, models, samples, arm) if samples else {}
    ood = _out_of_distribution(correct, starts, seeds, models, pairs, arm)
    stability = {f"{start}-seed{seed}": warmup_stability(runs[f"{start}-seed{seed}"])
                 for start in starts for seed in seeds if start != "base"}
    spread = {name: _spread([correct[(name.split("+")[0], seed)]["rl" if "+" in name else "warmup"] for seed in seeds])
              for name in accuracy}
    results = {"study": study, "arms": accuracy, "rl_gain": rl_gain, "comparisons": comparisons, "seeds": seeds,
               "adjusted": adjusted, **({"curves": curves} if curves else {}),
               **({"pass_at_k": coverage} if coverage else {}),
               "stability": stability, "seed_spread": spread, **({"ood": ood} if ood else {}),
               **({"mechanism": _mechanism(mechanism)} if mechanism else {})}
    if mechanism:
        results["mechanism_policies"] = mechanism_policies(results["mechanism"])
    results["claims"] = claims(results)
    return {**results,
            "problems": len(next(iter(correct.values()))["warmup"]), "signal": signal, "diagnostics": diagnostics,
            "associations": associations, "handoff": study["handoff"],
            **({"regraded": {"records": sum(len(v) for c in correct.values() for v in c.values()),
                             "changed": sum(changed for _, changed, _ in graded.values())}} if regrade else {}),
            **({"samples": samples} if samples else {})}


def compared(starts: list[str]) -> list[tuple[str, str]]:
    """The pairs of starts compared, (the method's start, another): cadft (else the last start) against every other
    start, except that a '-matched' start (GRPO at its calibrated temperature) is set against cadft-matched where
    that runs, so that both explore alike."""
    target = "cadft" if "cadft" in starts else starts[-1]
    matched = f"{target}-matched"
    return [(matched if _is_matched(other) and other != matched and matched in starts else target, other)
            for other in starts if other != target]


def _is_matched(arm: str) -> bool:
    return arm != "base" and "matched" in start_parts(arm)[1]


def _loss(arm: str) -> str:
    return "none" if arm == "base" else start_parts(arm)[0]


def pass_at_k_curves(correct: dict[tuple[str, int], dict[str, list[float]]], starts: list[str], seeds: list[int],
                     models: list[str], samples: int, arm) -> dict[str, Any]:
    """Coverage, from the eval's `samples` sampled completions per held-out problem: each arm's pass@k for k = 1, 2,
    4, ... and `samples` (unbiased per problem, then `_interval` over problems and seeds), and per start what GRPO
    changed at the largest k, paired by problem: a negative change is GRPO narrowing what the policy can solve."""
    ks = sorted({2 ** i for i in range(samples.bit_length())} | {samples})

    def per_problem(start: str, seed: int, model: str, k: int) -> list[float]:
        return [pass_at_k(samples, round(score * samples), k) for score in correct[(start, seed)][model]]

    out: dict[str, Any] = {"k": ks, "arms": {}, "rl_change": {}}
    for start in starts:
        for model in models:
            out["arms"][arm(start, model)] = [
                _interval([per_problem(start, seed, model, k) for seed in seeds], "accuracy", 1.0) for k in ks]
        if "rl" in models:
            out["rl_change"][start] = _interval(
                [[a - b for a, b in zip(per_problem(start, seed, "rl", ks[-1]), per_problem(start, seed, "warmup", ks[-1]))]
                 for seed in seeds], "difference", 1.0)
    return out


def learning_curves(runs: dict[str, RunDir], starts: list[str], seeds: list[int],
                    pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Each start's GRPO learning curve (`rl.curve_every`: greedy accuracy on fixed held-out problems, per step),
    its mean over seeds at each step, and its area (`statistics.curve_area`: the curve's mean height, higher for a
    start that learns sooner) per seed and as a mean with a t interval over seeds; for each of `pairs` (`compared`),
    the first start's area minus the second's, paired by seed ("area of <a> vs <b>"). Empty where the runs drew
    no curve."""
    per_run = {(start, seed): (runs[f"{start}-seed{seed}"].manifest()["stages"].get("rl", {}).get("metrics") or {})
               for start in starts for seed in seeds}
    if not any(m.get("curve") for m in per_run.values()):
        return {}
    out: dict[str, Any] = {"starts": {}, "comparisons": {}}
    for start in starts:
        curves = [per_run[(start, seed)].get("curve") or [] for seed in seeds]
        steps = sorted({p["step"] for curve in curves for p in curve})
        out["starts"][start] = {
            "steps": steps,
            "mean": [mean_present([next((p["accuracy"] for p in c if p["step"] == step), None) for c in curves])
                     for step in steps],
            "area": _over_seeds([per_run[(start, seed)].get("curve_area") for seed in seeds], None),
            "per_seed": {str(seed): per_run[(start, seed)].get("curve_area") for seed in seeds},
        }
    areas = {start: out["starts"][start]["per_seed"] for start in starts}
    for target, other in pairs:
        diffs = [areas[target][str(seed)] - areas[other][str(seed)] for seed in seeds
                 if areas[target][str(seed)] is not None and areas[other][str(seed)] is not None]
        if len(diffs) > 1:
            out["comparisons"][f"area of {target} vs {other}"] = _interval([[d] for d in diffs], "difference", 1.0)
    return out


def _out_of_distribution(correct, starts: list[str], seeds: list[int], models: list[str],
                         pairs: list[tuple[str, str]], arm) -> dict[str, Any] | None:
    """Accuracy per arm on each out-of-distribution set and on their average (the macro average of benchmark
    tables: every set weighs the same), and the first start of each of `pairs` against the second on the average
    and on each set, all with the seed-and-problem intervals; the average's counts the problems' spread within
    each set only (stratified, as the sets are fixed), not the differences between the sets' means."""
    sets = sorted({key.split("@", 1)[1] for scores in correct.values() for key in scores if "@" in key})
    if not sets:
        return None
    for (start, seed), scores in correct.items():
        missing = [f"{model}@{name}" for model in models for name in sets if f"{model}@{name}" not in scores]
        if missing:
            raise ColdstartError(f"compare: the {start} start's run with seed {seed} was not graded on "
                                 f"{', '.join(missing)}, which other runs were; run its eval stage again (--force eval)")

    def average(scores_of) -> list[list[float]]:
        """Per seed, every set's problems (`scores_of(seed, set)`) centred on that set's mean over seeds and
        problems and scaled by total / (sets x its size), plus the mean of those set means: a seed's mean is its
        macro average, and the problems' variance is within the sets."""
        per_seed = [[scores_of(seed, name) for name in sets] for seed in seeds]
        set_means = [statistics.fmean(x for seed_sets in per_seed for x in seed_sets[j]) for j in range(len(sets))]
        macro = statistics.fmean(set_means)
        total = sum(len(scores) for scores in per_seed[0])
        return [[(x - set_means[j]) * total / (len(sets) * len(scores)) + macro
                 for j, scores in enumerate(seed_sets) for x in scores] for seed_sets in per_seed]

    out: dict[str, Any] = {"sets": sets, "arms": {}}
    for start in starts:
        for model in models:
            for name in sets:
                out["arms"][f"{arm(start, model)}@{name}"] = _interval(
                    [correct[(start, seed)][f"{model}@{name}"] for seed in seeds], "accuracy", 1.0)
            out["arms"][arm(start, model)] = _interval(
                average(lambda seed, name: correct[(start, seed)][f"{model}@{name}"]), "accuracy", 1.0)
    for target, other in pairs:
        for model in models:
            def difference(seed: int, s: str) -> list[float]:
                return [a - b for a, b in zip(correct[(target, seed)][f"{model}@{s}"],
                                              correct[(other, seed)][f"{model}@{s}"])]

            name = f"{arm(target, model)} vs {arm(other, model)}"
            out[name] = _interval(average(difference), "difference", 1.0)
            out[name]["sets"] = {s: _interval([difference(seed, s) for seed in seeds], "difference", 1.0) for s in sets}
    return out


def _mechanism(folders: dict[str, Path]) -> dict[str, Any]:
    """Each mechanism check's verdicts, update statistics and mean gradient norm per compatibility decile and loss
    (not its per-sample records), and where it is."""
    from coldstart.gradients import norm_deciles

    out = {}
    for name, folder in folders.items():
        r = json.loads((Path(folder) / "results.json").read_text())
        out[name] = {"dir": str(folder), "samples": len(r["samples"]), "losses": r["losses"],
                     "assumption": {loss: {k: v for k, v in a.items() if k != "deciles"} for loss, a in r["assumption"].items()},
                     "nulls": r.get("nulls"), "ratios": r.get("ratios"), "errors": r.get("errors"),
                     "deciles": norm_deciles(r["samples"])}
    return out


def policy_of(name: str) -> str:
    """The policy a mechanism check measured (`<start>@step<N>`), its seed dropped."""
    return name.rpartition("-seed")[0] or name


def _over_seeds(values: list[float | None], one_seed: tuple[Any, Any] | None) -> dict[str, Any]:
    """The mean of a figure measured once per seed, with a 95% t interval over the seeds; with one seed, that
    seed's own interval (over its minibatches or samples). None where a seed lacks the figure."""
    import numpy as np
    from scipy.stats import sem, t

    if not values or any(v is None for v in values):
        return {"mean": None, "interval": [None, None], "seeds": len(values)}
    if len(values) == 1:
        return {"mean": values[0], "interval": list(one_seed or (None, None)), "seeds": 1}
    mean, spread = float(np.mean(values)), float(sem(values))
    low, high = t.interval(0.95, len(values) - 1, loc=mean, scale=spread) if spread > 0 else (mean, mean)
    return {"mean": mean, "interval": [float(low), float(high)], "seeds": len(values)}


def mechanism_policies(mechanism: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The mechanism per policy over its seeds: the paper's assumption as DFT's length-controlled rank correlation
    of gradient norm with NLL (`holds` when the interval lies above 0, `fails` below), and cadft's weighted second
    moment over Kish's prediction, the expectation of the same weights permuted within minibatches
    (`gradients.weighting_nulls`' effect: "compatibility lowers the noise" when the interval lies below 1, raises
    it above, else "no compatibility effect"). With several seeds the intervals are over seeds; with one, they
    are that seed's own (over its samples and minibatches), and the verdicts read them alike (the seed's noise
    verdict is the permutation test's, which can differ at the edge). The update ratios, cadft's cosine with the
    full-sample gradient it weighs, the noise scales and the decile norms are means over seeds."""
    from coldstart.gradients import trend_verdict

    groups: dict[str, list[dict[str, Any]]] = {}
    for name, m in mechanism.items():
        groups.setdefault(policy_of(name), []).append(m)
    out = {}
    for policy, ms in groups.items():
        dft = [m["assumption"]["dft"] for m in ms]
        rho = _over_seeds([a.get("partial_rho") for a in dft], dft[0].get("partial_interval"))
        nulls = [m.get("nulls") or {} for m in ms]
        effect = _over_seeds([n.get("effect") for n in nulls], nulls[0].get("effect_interval"))
        rho["verdict"] = trend_verdict(*rho["interval"])
        low, high = effect["interval"]
        effect["verdict"] = None if low is None else (
            "compatibility lowers the noise" if high < 1 else
            "compatibility raises the noise" if low > 1 else "no compatibility effect")

        def mean_of(read) -> float | None:
            return mean_present([read(m) for m in ms])

        out[policy] = {
            "seeds": len(ms), "samples": sum(m["samples"] for m in ms), "assumption": rho, "noise": effect,
            "sft_rho": mean_of(lambda m: m["assumption"]["sft"]["rho"]),
            "cadft_over_dft": mean_of(lambda m: m["losses"]["cadft"]["mean_sq_update"] / m["losses"]["dft"]["mean_sq_update"]
                                      if m["losses"]["dft"]["mean_sq_update"] else None),
            "cadft_cosine": mean_of(lambda m: ((m.get("errors") or {}).get("cadft") or {}).get("full_sample", {}).get("cosine")),
            "noise_scale": {loss: mean_of(lambda m: m["losses"][loss]["noise_scale"]) for loss in ("sft", "dft", "cadft")},
            "deciles": {loss: [{"decile": d["decile"], "value": mean_present([m["deciles"][loss][i]["value"] for m in ms])}
                               for i, d in enumerate(ms[0]["deciles"][loss])] for loss in ms[0]["deciles"]},
        }
    return out


def _mechanism_claim(policies: dict[str, Any]) -> dict[str, Any]:
    """The stability mechanism over the measured policies (`mechanism_policies`): where the paper's assumption
    holds, and whether CADFT's weights lower the update's noise by more than the same weights shuffled within each
    minibatch would (the compatibility signal, not the weights' inequality, which lowers any second moment by
    itself). Supported when the assumption holds and the weights lower the noise beyond the permuted control at
    every policy; contradicted when the assumption fails somewhere and holds nowhere, or the weights raise the noise
    beyond it at every policy; otherwise no difference shown."""
    verdicts = [p["assumption"]["verdict"] for p in policies.values()]
    effects = [p["noise"]["verdict"] for p in policies.values() if p["noise"]["verdict"]]
    everywhere = len(effects) == len(verdicts)
    if everywhere and all(v == "holds" for v in verdicts) and all(e == "compatibility lowers the noise" for e in effects):
        verdict = "supported"
    elif (("fails" in verdicts and "holds" not in verdicts)
          or (everywhere and all(e == "compatibility raises the noise" for e in effects))):
        verdict = "contradicted"
    else:
        verdict = "no difference shown"
    noise = "not measured against the permuted control"
    measured = [p["noise"]["mean"] for p in policies.values() if p["noise"]["verdict"]]
    if measured:
        noise = (f"noise over the permuted control {min(measured):.2f}-{max(measured):.2f} (lowered at "
                 f"{effects.count('compatibility lowers the noise')}, raised at "
                 f"{effects.count('compatibility raises the noise')} of {len(effects)})")
    text = (f"assumption holds at {verdicts.count('holds')} of {len(verdicts)} policies (fails at "
            f"{verdicts.count('fails')}); {noise}")
    seeds = sorted({p["seeds"] for p in policies.values()})
    over = (f"intervals over {seeds[0]} seeds" if seeds[0] > 1 else
            "one seed: intervals over its minibatches, not over training runs")
    if seeds[0] < 2:
        verdict = f"one seed: {'no difference' if verdict == 'no difference shown' else verdict} at its policies; " \
                  "no verdict about the method"
    return {"claim": "stability (mechanism)", "vs": "dft", "figure": None, "text": text, "verdict": verdict,
            "measured": "at fixed policies (" + ", ".join(policies) + "): whether the least compatible "
                        "demonstrations carry the largest DFT gradients, and cadft's weighted second moment against "
                        f"the same weights permuted within minibatches ({over})"}


def warmup_stability(run_dir: RunDir) -> dict[str, Any]:
    """The warm-up's gradient norm and loss per step, as `coldstart.stability.curve_stability` reads them."""
    path = run_dir.stage_dir("warmup") / "metrics.jsonl"
    if not path.is_file():
        return {}
    metrics = read_jsonl(path)
    return {"grad_norm": curve_stability([m.get("grad_norm") for m in metrics if "loss" in m]),
            "loss": curve_stability([m.get("loss") for m in metrics if "loss" in m])}


def _spread(per_seed: list[list[float]]) -> float | None:
    """The standard deviation over seeds of an arm's accuracy (None with one seed)."""
    means = [sum(scores) / len(scores) for scores in per_seed]
    return statistics.stdev(means) if len(means) > 1 else None


def _verdict(d: dict[str, Any], lower_is_better: bool = False, margin: float | None = None, seeds: int = 2) -> str:
    """Supported or contradicted where the interval excludes 0; otherwise, given an equivalence `margin` (in the
    difference's units) and the figure's standard error, "equivalent within the margin" when the two one-sided
    tests place it inside +-margin and "inconclusive" when not (the interval is too wide to rule out a difference
    of the margin's size); without them, "no difference shown". With one seed there is no interval over training
    runs, so no verdict about the method: what this seed shows on these problems, and that it is one seed."""
    if seeds < 2:
        if d.get("ci_low") is None:
            return "one seed, no interval: no verdict about the method"
        better = d["difference"] < 0 if lower_is_better else d["difference"] > 0
        shown = ("better" if better else "worse") + " on these problems" if d["significant"] else "no difference on these problems"
        return f"one seed: {shown}; no verdict about the method"
    if d["significant"]:
        better = d["difference"] < 0 if lower_is_better else d["difference"] > 0
        return "supported" if better else "contradicted"
    if margin is None or d.get("se") is None:
        return "no difference shown"
    equivalent = equivalence_test(d["difference"], d["se"], d["df"], margin)["equivalent"]
    return "equivalent within the margin" if equivalent else "inconclusive"


# what each of the paper's claims is measured by here, for the target start against each other start
CLAIMS = {
    "stability": "coefficient of variation of the warm-up's gradient norm (its fall with the loss included), "
                 "{target} minus {other} (lower is stabler; over seeds)",
    "generalization": "accuracy on the out-of-distribution sets, {target} minus {other} after warm-up",
    "cold-start RL (adjusted)": "accuracy after GRPO at equal accuracy after warm-up (analysis of covariance over "
                                "seeds, one slope), {target} minus {other}",
    "cold-start RL": "RL gain (after GRPO minus after warm-up), {target} minus {other}",
}


def cv_difference(stability: dict[str, dict[str, Any]], target: str, other: str,
                  seeds: list[int]) -> dict[str, Any] | None:
    """The warm-up's gradient-norm coefficient of variation, `target` minus `other` paired by seed, over the seeds
    where both have one (`stability`: `warmup_stability` by run name, `<start>-seed<N>`): a t interval over seeds,
    the figure alone with one seed, None with none."""
    per_seed = []
    for seed in seeds:
        mine = stability.get(f"{target}-seed{seed}", {}).get("grad_norm", {}).get("cv")
        theirs = stability.get(f"{other}-seed{seed}", {}).get("grad_norm", {}).get("cv")
        if mine is not None and theirs is not None:
            per_seed.append([mine - theirs])
    if len(per_seed) > 1:
        return {**_interval(per_seed, "difference", math.inf), "unit": "cv"}
    if per_seed:
        return {"difference": per_seed[0][0], "ci_low": None, "ci_high": None, "significant": False, "unit": "cv"}
    return None


def claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per claim and other start (sft, dft): what was measured, the figure with its interval, the verdict
    (`_verdict`: supported or contradicted; for the accuracy claims, given the study's margin, equivalent within it
    or inconclusive; else no difference shown; with one seed, what the seed shows and no verdict) and its role:
    primary for the comparison the study declared (`compare.primary`), secondary for every other. A claim without
    its measurement says so."""
    starts = results["study"]["starts"]
    margin = results["study"].get("margin")
    primary = results["study"].get("primary")
    seeds = len(results["seeds"])
    rows = []
    # the paper's claims set the method against another warm-up loss; cadft against cadft-rewrite or cadft-matched
    # is an ablation (rewriting, the temperature), shown among the paired comparisons
    for target, other in (pair for pair in compared(starts) if "base" not in pair and _loss(pair[0]) != _loss(pair[1])):
        figures = {
            "stability": cv_difference(results["stability"], target, other, results["seeds"]),
            "generalization": results.get("ood", {}).get(f"{target} vs {other}"),
            "cold-start RL (adjusted)": (results.get("adjusted") or {}).get(f"{target} vs {other}"),
            "cold-start RL": results["comparisons"].get(f"RL gain of {target} vs {other}"),
        }
        if _is_matched(other):  # the warm-ups are the unmatched starts': their rows are there already
            figures = {k: v for k, v in figures.items() if k.startswith("cold-start RL")}
        for claim, d in figures.items():
            if d is None:
                verdict = ("not measured (needs two seeds or more)" if claim == "cold-start RL (adjusted)"
                           and results.get("rl_gain") and seeds < 2 else "not measured")
            else:
                verdict = _verdict(d, lower_is_better=claim == "stability", seeds=seeds,
                                   margin=None if claim == "stability" or margin is None else margin / 100)
            rows.append({"claim": claim, "vs": other, "measured": CLAIMS[claim].format(target=target, other=other),
                         "figure": d, "verdict": verdict,
                         "role": "primary" if f"{claim} vs {other}" == primary else "secondary"})
    if results.get("mechanism_policies"):
        rows.insert(0, {**_mechanism_claim(results["mechanism_policies"]), "role": "secondary"})
    return rows


def _signal(run_dir: RunDir) -> dict[str, Any]:
    """What GRPO had to learn from in one run: the handoff's rollouts of the warmed policy on RL prompts (pass@1,
    pass@k, zero-variance groups, entropy, length, clipped), the prompts curation kept, the zero-variance share
    during GRPO, and each stage's drift (`DRIFT`)."""
    stages = run_dir.manifest()["stages"]
    handoff = stages.get("handoff", {}).get("metrics", {})
    warmed = (handoff.get("drift") or {}).get("warmed") or {}
    grpo = (stages.get("eval", {}).get("metrics", {}).get("drift") or {}).get("rl") or {}
    curation = handoff.get("curation") or {}
    rollouts = handoff.get("rollouts", {})
    return {
        "pass@1": rollouts.get("pass@1"),
        "pass@k": rollouts.get(f"pass@{rollouts.get('k')}"),
        "k": rollouts.get("k"),
        "entropy": rollouts.get("entropy"),
        "mean_length": rollouts.get("mean_length"),
        "clipped": rollouts.get("truncated"),
        "pre_rl_zero_variance": curation.get("zero_variance_pool", rollouts.get("zero_variance")),
        "rollout_prompts": rollouts.get("prompts"),
        "kept": curation.get("kept"),
        "pool": curation.get("pool"),
        "checkpoint": handoff.get("checkpoint"),
        # correctness alone, as before GRPO (the weighted reward's share also counts format differences)
        "rl_zero_variance": stages.get("rl", {}).get("metrics", {}).get("zero_variance_accuracy_share_mean"),
        "kl_from_base": warmed.get("kl_per_token"),
        "warmed_entropy": warmed.get("entropy_per_token"),
        "kl_from_warmed": grpo.get("kl_per_token"),
        "rl_entropy": grpo.get("entropy_per_token"),
    }


def compare_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / cfg.name / "compare"
