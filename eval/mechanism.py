"""`coldstart mechanism`: would CADFT change anything for this model on this data? The gradients of the warm-up's
losses at a fixed policy (`coldstart.gradients`), on the config's training demonstrations in minibatches of the
warm-up's batch, written as `results.json`, `report.md` and `gradients.png`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coldstart.config import Config
from coldstart.data import load_samples
from coldstart.gradients import LOSSES, assumption, measure, norm_deciles, weighting_nulls
from coldstart.lengths import apply_length_policy
from coldstart.eval.report import number
from coldstart.models import resolve_model_path
from coldstart.plots import gradient_deciles
from coldstart.runs import STAGES, atomic_write_text, folder_in_place


def policy_name(model: str) -> str:
    """A measured policy's name (its report's title and default folder): a stage's checkpoint by its run, stage and
    folder (`final` alone says nothing, and two runs' would share a folder), any other model by its folder."""
    folder = Path(model).expanduser()
    folder = folder.resolve() if folder.exists() else folder  # "rl/final" run from inside two runs is two folders
    return "/".join(folder.parts[-3:]) if folder.parent.name in STAGES else folder.name


def global_batch(cfg: Config, processes: int) -> int:
    """The warm-up's global batch: what CADFT's batch statistics z-score over (`cadft.stats: batch`) and B of the
    noise scale."""
    return cfg.warmup.per_device_train_batch_size * cfg.warmup.gradient_accumulation_steps * processes


def run(cfg: Config, model_path: str, out: Path, minibatches: int, runtime,
        key: str | None = None) -> dict[str, Any]:
    """Measure `model_path` on `minibatches` minibatches of the warm-up's global batch (the launch's processes
    count in it) from the training split (shuffled by the run's seed), on this process's device, and write the
    results to `out` (with `key`, what they were measured from, for callers that skip a repeat)."""
    path = resolve_model_path(model_path)
    tokenizer = runtime.load_tokenizer(path, cfg.model.trust_remote_code)
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    train, _ = apply_length_policy(train, tokenizer, cfg.warmup.max_length, "drop")
    batch = global_batch(cfg, runtime.num_processes)
    train = train.shuffle(seed=cfg.seed).select(range(min(len(train), minibatches * batch)))
    model = runtime.load_model(cfg.model, path, master=True)  # gradients of the weights as trained
    results = measure(model, tokenizer, list(train), batch, cfg.warmup.cadft, cfg.warmup.max_length)
    results = {"model": policy_name(path), "data": cfg.data.source, "key": key, **results,
               **_tests(results)}
    with folder_in_place(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (tmp / "report.md").write_text(render(results))
        gradient_deciles(results, tmp / "gradients.png")
    return results


def retest(out: Path) -> dict[str, Any]:
    """The assumption's tests of a check measured before, again from its per-sample records (so that it follows a
    change to the test), written back to its results and report."""
    results = json.loads((out / "results.json").read_text())
    results.update(_tests(results))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "report.md", render(results))
    return results


def _tests(results: dict[str, Any]) -> dict[str, Any]:
    """The tests read off the per-sample records: the assumption per loss, and CADFT's noise against its nulls
    (`weighting_nulls`, on the norm of the term CADFT weighs; dft for a check measured before it was recorded)."""
    samples = results["samples"]
    term = results.get("weighed_term", "dft")
    return {"assumption": {loss: assumption(samples, f"norm_{loss}") for loss in ("sft", "dft")},
            "nulls": weighting_nulls(samples, f"norm_{term}")}


def render(results: dict[str, Any]) -> str:
    b, k = results["batch_size"], results["minibatches"]
    dft = results["losses"]["dft"]["mean_sq_update"]
    lines = [f"# Gradients at a fixed policy: {results['model']}", "",
             f"{len(results['samples'])} demonstrations of {results['data']} in {k} minibatches of {b} (the warm-up's "
             f"batch); CADFT weights from each minibatch's NLL statistics, beta = {results['beta']:g}.", "",
             "## The paper's assumption: the least compatible samples carry the largest gradients", "",
             "Spearman's rank correlation of each sample's NLL with its gradient norm; holds when it is positive "
             "(permutation p < 0.05) and the least compatible tenth has the largest mean norm. A norm is the sample's "
             "contribution to the update, summed over its tokens: longer demonstrations weigh more (NLL vs length: "
             f"rho {number(results['assumption']['dft']['rho_tokens'], '+.2f')}).", "",
             "| loss | rho | p | least compatible decile | largest decile | verdict |", "|---|---|---|---|---|---|"]
    for loss, a in results["assumption"].items():
        lines.append(f"| {loss} | {number(a['rho'], '+.2f')} | {a['p']:.3g} | {a['least_compatible_decile']:.4g} | "
                     f"{a['largest_decile']:.4g} | {a['verdict']} |")
    lines += ["", "## The update per loss", "",
              "Over the minibatches: the mean squared norm of the update, the trace of its covariance, the squared "
              "norm of the mean gradient, and the noise scale B tr(cov) / |G|^2. cadft divides by the tokens as "
              "trained (its weights below 1 also shrink the step); cadft-weights by the sum of weight x tokens (DFT's "
              "step size).", "",
              "| loss | mean squared update | vs dft | tr(cov) | squared mean gradient | noise scale |",
              "|---|---|---|---|---|---|"]
    for loss in LOSSES:
        s = results["losses"][loss]
        ratio = s["mean_sq_update"] / dft if dft else None
        lines.append(f"| {loss} | {number(s['mean_sq_update'], '.4g')} | {number(ratio, '.4g')} | {number(s['trace_cov'], '.4g')} | "
                     f"{number(s['sq_mean_gradient'], '.4g')} | {number(s['noise_scale'], '.4g')} |")
    n = results["nulls"]
    lo, hi = n["permuted_interval"]
    elo, ehi = n["effect_interval"]
    lines += ["", "## CADFT's noise against weights that know nothing of the gradients", "",
              "The weighted per-sample second moment sum w^2 |g|^2 over DFT's sum |g|^2 (what sets the update's "
              "noise), against two nulls: Kish's (each minibatch's mean w^2: unequal weights alone) and the same "
              f"weights shuffled within each minibatch ({n['permutations']} permutations). The effect is CADFT's "
              "over the nulls' expectation, with a bootstrap interval over minibatches; below 1, the weights damp the "
              "samples with the larger gradients.", "",
              "| | CADFT | Kish | permuted (95%) | effect | p (lower) | verdict |", "|---|---|---|---|---|---|---|",
              f"| as trained | {n['observed']:.4g} | {n['kish']:.4g} | {n['permuted']:.4g} [{lo:.4g}, {hi:.4g}] | "
              f"{number(n['effect'], '.3f')} [{number(elo, '.3f')}, {number(ehi, '.3f')}] | {n['p_lower']:.3g} | "
              f"{n['verdict']} |",
              f"| divided by mean(w)^2 | {number(n['matched_step']['observed'], '.4g')} | "
              f"{number(n['matched_step']['kish'], '.4g')} | | | | |"]
    lines += ["", "## Gradient norm by compatibility decile", "", "| decile | compatibility | sft | dft | cadft |",
              "|---|---|---|---|---|"]
    per_loss = norm_deciles(results["samples"])
    for row in zip(*per_loss.values()):
        lines.append(f"| {row[0]['decile']} | {row[0]['compatibility']:.3f} | "
                     + " | ".join(f"{d['value']:.4g}" for d in row) + " |")
    styles = sorted({r["style"] for r in results["samples"] if "style" in r})
    if styles:
        lines += ["", "## By demonstration style", "", "| style | samples | compatibility | dft norm | weight |",
                  "|---|---|---|---|---|"]
        for style in styles:
            part = [r for r in results["samples"] if r.get("style") == style]
            mean = lambda key: sum(r[key] for r in part) / len(part)  # noqa: E731
            lines.append(f"| {style} | {len(part)} | {mean('compatibility'):.3f} | {mean('norm_dft'):.4g} | "
                         f"{mean('weight'):.3f} |")
    return "\n".join(lines) + "\n"
