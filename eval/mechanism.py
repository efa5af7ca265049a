"""`coldstart mechanism`: would CADFT change anything for this model on this data? The gradients of the warm-up's
losses at a fixed policy (`coldstart.gradients`), on the config's training demonstrations in minibatches of the
warm-up's batch, written as `results.json`, `report.md` and `gradients.png`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coldstart.config import Config
from coldstart.data import load_samples
from coldstart.gradients import LOSSES, adam_preconditioner, assumption, measure, norm_deciles, update_ratios, weighting_nulls
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
    count in it) from the training split (shuffled by the run's seed), against the gradient on as many of the
    split's other demonstrations as there are (up to as many again: the held-out reference), on this process's
    device, and write the results to `out` (with `key`, what they were measured from, for callers that skip a
    repeat). Where the checkpoint keeps its AdamW state, everything is measured a second time in Adam's geometry
    (`results["adam"]`)."""
    path = resolve_model_path(model_path)
    tokenizer = runtime.load_tokenizer(path, cfg.model.trust_remote_code)
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    train, _ = apply_length_policy(train, tokenizer, cfg.warmup.max_length, "drop")
    batch = global_batch(cfg, runtime.num_processes)
    train = list(train.shuffle(seed=cfg.seed).select(range(min(len(train), 2 * minibatches * batch))))
    measured, held_out = train[:minibatches * batch], train[minibatches * batch:]
    model = runtime.load_model(cfg.model, path, master=True)  # gradients of the weights as trained
    settings = {"cadft": cfg.warmup.cadft, "max_length": cfg.warmup.max_length, "held_out": held_out}
    preconditioner = adam_preconditioner(model, path)  # before the long measurement: it may only warn
    results = measure(model, tokenizer, measured, batch, **settings)
    if preconditioner is not None:
        adam = measure(model, tokenizer, measured, batch, preconditioner=preconditioner, **settings)
        results["adam"] = {**adam, **_tests(adam)}
    results = {"model": policy_name(path), "data": cfg.data.source, "key": key, **results, **_tests(results)}
    with folder_in_place(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (tmp / "report.md").write_text(render(results))
        gradient_deciles(results, tmp / "gradients.png")
    return results


def retest(out: Path) -> dict[str, Any]:
    """The tests of a check measured before, again from its per-sample records (so that it follows a change to
    the tests), written back to its results and report."""
    results = json.loads((out / "results.json").read_text())
    results.update(_tests(results))
    if "adam" in results:
        results["adam"].update(_tests(results["adam"]))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "report.md", render(results))
    return results


def _tests(results: dict[str, Any]) -> dict[str, Any]:
    """The tests read off the records: the assumption per loss, CADFT's noise against its nulls
    (`weighting_nulls`, on the norm of the term CADFT weighs; dft for a check measured before it was recorded),
    and each loss's mean squared update over DFT's with an interval over minibatches (where they were kept)."""
    samples = results["samples"]
    term = results.get("weighed_term", "dft")
    tests = {"assumption": {loss: assumption(samples, f"norm_{loss}") for loss in ("sft", "dft")},
             "nulls": weighting_nulls(samples, f"norm_{term}")}
    if "per_minibatch" in results:
        tests["ratios"] = update_ratios(results["per_minibatch"])
    return tests


def _interval(values: list[float | None], spec: str) -> str:
    low, high = values
    return f"[{number(low, spec)}, {number(high, spec)}]"


def render(results: dict[str, Any]) -> str:
    b, k = results["batch_size"], results["minibatches"]
    normalize = results.get("normalize", "tokens")
    per = ("divided by the minibatch's tokens (`normalize: tokens`)" if normalize == "tokens"
           else "each over its own tokens, then over the minibatch (`normalize: samples`)")
    lines = [f"# Gradients at a fixed policy: {results['model']}", "",
             f"{len(results['samples'])} demonstrations of {results['data']} in {k} minibatches of {b} (the warm-up's "
             f"batch); CADFT weights from each minibatch's NLL statistics, beta = {results['beta']:g}; each sample's "
             f"gradient {per}. Intervals are 95% bootstrap intervals (over samples for the assumption, over "
             "minibatches for the rest).", ""]
    lines += _measurement(results, "##")
    if "adam" in results:
        lines += ["## In Adam's geometry", "",
                  "The same measurements with every gradient multiplied elementwise by 1 / (sqrt(v_hat) + eps) from the "
                  "checkpoint's AdamW state: the space the optimizer's step lives in, where a loss's overall scale "
                  "nearly cancels.", ""]
        lines += _measurement(results["adam"], "###", tables_only=True)
    lines += ["## Gradient norm by compatibility decile", "", "| decile | compatibility | sft | dft | cadft |",
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


def _measurement(results: dict[str, Any], level: str, tables_only: bool = False) -> list[str]:
    """One measurement's sections (the assumption, the updates, their error, the nulls), headed at `level`."""
    lines = [f"{level} The paper's assumption: the least compatible samples carry the largest gradients", ""]
    if not tables_only:
        lines += ["Spearman's rank correlation of each sample's NLL with its gradient norm, and the same at a fixed "
                  "token count (the partial rank correlation: a norm is the sample's contribution to the update, so "
                  "under the token normalisation longer demonstrations weigh more; NLL vs length: rho "
                  f"{number(results['assumption']['dft']['rho_tokens'], '+.2f')}). Holds when the length-controlled "
                  "interval lies above 0, fails below it.", ""]
    lines += ["| loss | rho | interval | p | rho at fixed length | interval | verdict |", "|---|---|---|---|---|---|---|"]
    for loss, a in results["assumption"].items():
        lines.append(f"| {loss} | {number(a['rho'], '+.2f')} | {_interval(a.get('rho_interval', [None, None]), '+.2f')} | "
                     f"{a['p']:.3g} | {number(a.get('partial_rho'), '+.2f')} | "
                     f"{_interval(a.get('partial_interval', [None, None]), '+.2f')} | {a['verdict']} |")
    if results.get("token_bins") and not tables_only:
        lines += ["", "Where the gradients sit, per bin of the labelled tokens' probability p: the share of the tokens "
                  "and of each term's logit gradient (SFT's ~ 1 - p, DFT's ~ p (1 - p): DFT's vanishes as p -> 0, "
                  "so a demonstration made incompatible by a few very unlikely tokens carries a small DFT "
                  "gradient).", "", "| p | tokens | SFT gradient | DFT gradient |", "|---|---|---|---|"]
        for row in results["token_bins"]:
            lines.append(f"| {row['low']:.1f}-{row['high']:.1f} | {row['tokens']:.1%} | {row['sft']:.1%} | "
                         f"{row['dft']:.1%} |")
    dft = results["losses"]["dft"]["mean_sq_update"]
    ratios = results.get("ratios", {})
    lines += ["", f"{level} The update per loss", ""]
    if not tables_only:
        lines += ["Over the minibatches: the mean squared norm of the update (and over DFT's), the trace of its "
                  "covariance, the squared norm of the mean gradient, and the noise scale B tr(cov) / |G|^2. cadft "
                  "is the update as trained: its weights below 1 also shrink the step.", ""]
    lines += ["| loss | mean squared update | vs dft | interval | tr(cov) | squared mean gradient | noise scale |",
              "|---|---|---|---|---|---|---|"]
    for loss in LOSSES:
        s = results["losses"][loss]
        r = ratios.get(loss, {"ratio": s["mean_sq_update"] / dft if dft else None, "interval": [None, None]})
        lines.append(f"| {loss} | {number(s['mean_sq_update'], '.4g')} | {number(r['ratio'], '.4g')} | "
                     f"{_interval(r['interval'], '.4g')} | {number(s['trace_cov'], '.4g')} | "
                     f"{number(s['sq_mean_gradient'], '.4g')} | {number(s['noise_scale'], '.4g')} |")
    errors = results.get("errors")
    if errors:
        term = results.get("weighed_term", "dft")
        held = results.get("held_out", 0)
        lines += ["", f"{level} Bias: the updates against the gradient they estimate", ""]
        if not tables_only:
            lines += [f"Against the full-sample {term} gradient (the mean of its minibatch updates)"
                      + (f" and the same on {held} held-out demonstrations" if held else "")
                      + ": the cosine of the mean update with it (1: the same direction), the squared bias "
                      "|mean G - R|^2, and the mean squared error of a minibatch's update, what the optimizer "
                      "feels (bias plus spread; a shrunk step counts as error here, which Adam mostly undoes: "
                      "read the cosines).", ""]
        references = list(next(iter(errors.values())))
        lines += ["| loss | " + " | ".join(f"{name.replace('_', '-')}: cosine | mean cosine | squared bias | mse"
                                           for name in references) + " |",
                  "|---|" + "---|---|---|---|" * len(references)]
        for loss in LOSSES:
            cells = []
            for name in references:
                e = errors[loss][name]
                cells.append(f"{number(e['cosine'], '.4f')} | {number(e['mean_cosine'], '.4f')} | "
                             f"{number(e['sq_bias'], '.4g')} | {number(e['mse'], '.4g')}")
            lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    n = results["nulls"]
    lo, hi = n["permuted_interval"]
    elo, ehi = n["effect_interval"]
    lines += ["", f"{level} CADFT's noise against weights that know nothing of the gradients", ""]
    if not tables_only:
        lines += ["The weighted per-sample second moment sum w^2 |g|^2 over DFT's sum |g|^2 (what sets the update's "
                  "noise), against two nulls: Kish's (each minibatch's mean w^2: unequal weights alone) and the same "
                  f"weights shuffled within each minibatch ({n['permutations']} permutations). The effect is CADFT's "
                  "over the nulls' expectation, with a bootstrap interval over minibatches; below 1, the weights damp "
                  "the samples with the larger gradients.", ""]
    lines += ["| | CADFT | Kish | permuted (95%) | effect | p (lower) | verdict |", "|---|---|---|---|---|---|---|",
              f"| as trained | {n['observed']:.4g} | {n['kish']:.4g} | {n['permuted']:.4g} [{lo:.4g}, {hi:.4g}] | "
              f"{number(n['effect'], '.3f')} [{number(elo, '.3f')}, {number(ehi, '.3f')}] | {n['p_lower']:.3g} | "
              f"{n['verdict']} |",
              f"| divided by mean(w)^2 | {number(n['matched_step']['observed'], '.4g')} | "
              f"{number(n['matched_step']['kish'], '.4g')} | | | | |", ""]
    return lines
