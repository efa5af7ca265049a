"""Rendering reports as text: the comparison's (findings and tables from `coldstart.eval.compare`'s analysis) and a
run's results table. `coldstart.eval.outputs` writes them."""

from __future__ import annotations

from typing import Any

from coldstart.eval.compare import BEFORE_RL, DRIFT, DURING_RL
from coldstart.statistics import mean_present


# -- the comparison -------------------------------------------------------------------------------------------

CLIPPED = "†"  # an interval end cut to the values the mean can take


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(d: dict[str, Any], spec: str = ".1f") -> str:
    """An interval in points, its ends marked where they were cut to the values the mean can take."""
    cut = d.get("clipped") or []
    low, high = (format(100 * d[f"ci_{end}"], spec) + (CLIPPED if end in cut else "") for end in ("low", "high"))
    return f"[{low}, {high}]"


def _points(d: dict[str, Any], key: str = "difference") -> str:
    return f"{100 * d[key]:+.1f} points {_ci(d, '+.1f')}"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def number(x: float | None, spec: str) -> str:
    return "-" if x is None or x != x else format(x, spec)  # x != x: nan (a trace from one minibatch)


def _diagnostic_cells(s: dict[str, Any]) -> str:
    return (f"{_share(s.get('pass@1'))} | {_share(s.get('pass@k'))} | {_share(s.get('pre_rl_zero_variance'))} | "
            f"{number(s.get('entropy'), '.3f')} | {number(s.get('mean_length'), '.1f')} | {_share(s.get('clipped'))} | "
            f"{_share(s.get('rl_zero_variance'))} |")


DIAGNOSTIC_HEADER = ("pass@1 | {pass_at_k} | zero-variance before RL | entropy (nats) | length (tokens) | clipped | "
                     "zero-variance during GRPO |")


def _k(results: dict[str, Any]) -> int | None:
    """The number of rollouts per prompt the diagnostics were measured with."""
    return next((s["k"] for s in (results.get("signal") or {}).values() if s.get("k")), None)


def diagnostic_labels(results: dict[str, Any]) -> dict[str, str]:
    """Each diagnostic's label, pass@k named with its k."""
    k = _k(results)
    return {key: f"pass@{k}" if key == "pass@k" and k else label for key, label in {**BEFORE_RL, **DURING_RL}.items()}


def findings(results: dict[str, Any]) -> list[str]:
    """Plain sentences for what the intervals support, per start, between starts and across runs; "no difference
    shown" where an interval includes 0."""
    arms, seeds = results["arms"], results["seeds"]
    labels = diagnostic_labels(results)
    lines = []
    for start in results.get("study", {}).get("starts") or [a for a in arms if "+" not in a]:
        warm = arms[start]
        before = "as it is (no warm-up)" if start == "base" else "after warm-up"
        text = f"- **{start}**: {_pct(warm['accuracy'])}% {before} {_ci(warm)}"
        if start in results["rl_gain"]:
            after, gain = arms[f"{start}+grpo"], results["rl_gain"][start]
            text += f", {_pct(after['accuracy'])}% after GRPO {_ci(after)}; "
            if gain["significant"]:
                text += f"GRPO {'added' if gain['difference'] > 0 else 'took away'} {_points(gain)}."
            else:
                text += f"RL gain {_points(gain)}: no difference shown."
        else:
            text += "."
        d = results.get("diagnostics", {}).get(start)
        if d and d.get("pass@1") is not None:
            text += (f" Before GRPO, its rollouts on RL prompts were right {_share(d['pass@1'])} of the time "
                     f"({labels['pass@k']} {_share(d['pass@k'])}), {_share(d['pre_rl_zero_variance'])} of groups had zero variance, "
                     + (f"mean token entropy {d['entropy']:.2f} nats, " if d.get("entropy") is not None else "")
                     + f"{number(d['mean_length'], '.0f')} tokens long, {_share(d['clipped'])} clipped")
            if d.get("rl_zero_variance") is not None:
                text += f"; during GRPO {_share(d['rl_zero_variance'])} of groups had zero variance"
            text += f" (means over {len(seeds)} seeds)." if len(seeds) > 1 else "."
        lines.append(text)
    for name, d in results["comparisons"].items():
        if d["significant"]:
            lines.append(f"- {name}: {'higher' if d['difference'] > 0 else 'lower'}, {_points(d)}.")
        else:
            lines.append(f"- {name}: no difference shown ({_points(d)}).")
    for name, d in (results.get("adjusted") or {}).items():
        text = f"- {name} after GRPO at equal accuracy after warm-up (slope {d['slope']:+.2f}): "
        lines.append(text + (f"{'higher' if d['difference'] > 0 else 'lower'}, {_points(d)}." if d["significant"]
                             else f"no difference shown ({_points(d)})."))
    ood = results.get("ood") or {}
    for name, d in ((n, d) for n, d in ood.items() if " vs " in n):
        shown = [f"{s} ({_points(x)})" for s, x in (d.get("sets") or {}).items() if x["significant"]]
        text = (f"- {name}, out of distribution (average of {len(ood['sets'])} sets): "
                + (f"{'higher' if d['difference'] > 0 else 'lower'}, {_points(d)}" if d["significant"]
                   else f"no difference shown ({_points(d)})"))
        lines.append(text + (f"; a difference is shown on {', '.join(shown)}." if shown else
                             "; no set on its own shows a difference."))
    associations = results.get("associations") or {}
    if associations:
        tested = len(associations)
        shown = {n: a for n, a in associations.items() if a["p_adjusted"] < 0.05}
        for name, a in shown.items():
            lines.append(f"- Across the {a['units']} runs, the RL gain {'rises' if a['rho'] > 0 else 'falls'} with the "
                         f"{labels[name]} before GRPO (Spearman rho = {a['rho']:+.2f}, p = {a['p_adjusted']:.3f} adjusted for "
                         f"the {tested} diagnostics tested). An association across runs, not a cause.")
        rest = [labels[n] for n in associations if n not in shown]
        if rest:
            lines.append(f"- RL gain and {', '.join(rest)} before GRPO: no association shown.")
    return lines


def _claim_figure(d: dict[str, Any]) -> tuple[str, str]:
    if d.get("unit") == "cv":
        ci = "one seed: none" if d["ci_low"] is None else f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
        return f"{d['difference']:+.3f}", ci
    return f"{100 * d['difference']:+.1f} points", _ci(d, "+.1f")


def _intervals_shown(results: dict[str, Any]) -> int:
    """How many difference intervals the report shows (each read on its own)."""
    ood = [d for k, d in (results.get("ood") or {}).items() if " vs " in k]
    per_set = sum(len(d.get("sets") or {}) for d in ood)
    stability = [r for r in results.get("claims") or [] if r["claim"] == "stability" and r["figure"]
                 and r["figure"]["ci_low"] is not None]
    curves = (results.get("curves") or {}).get("comparisons") or {}
    return (len(results["rl_gain"]) + len(results["comparisons"]) + len(results.get("adjusted") or {}) + len(ood)
            + per_set + len(stability) + len(curves))


def claims_section(results: dict[str, Any]) -> list[str]:
    """The paper's three claims, one row per claim and baseline: what was measured, our figure, the verdict, and
    whether the row is the study's declared primary endpoint or secondary."""
    rows = results.get("claims") or []
    if not rows:
        return []
    study = results.get("study") or {}
    margin = "none declared" if study.get("margin") is None else f"+-{study['margin']:g} points"
    primary = study.get("primary")
    lines = ["## The paper's claims", "",
             "Stability, generalization and a better start for RL (Zhou et al., ACL 2026), each against each other "
             "warm-up: supported or contradicted where the 95% interval excludes 0. Otherwise an accuracy claim is "
             "equivalent within the margin (" + margin + ") where two one-sided tests place the difference inside "
             "it, and inconclusive where they do not; the stability row, without a margin, reads no difference "
             "shown. With one seed no row gives a verdict about the method: an interval over one seed's problems "
             "leaves out the training runs' variance. The MDE is the smallest difference the comparison detects "
             "with 80% power at this variance. The mechanism row reads its intervals at fixed policies (its rule is "
             "in its row). "
             + (f"The primary endpoint, declared before the study (compare.primary), is {primary}; every other row "
                "is secondary (read it as exploratory: several were tested)." if primary else
                "No primary endpoint was declared: every row is exploratory."), "",
             "| claim | vs | role | measured | figure | 95% CI | MDE | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        figure, ci = _claim_figure(r["figure"]) if r["figure"] else (r.get("text", "-"), "-")
        mde = (r["figure"] or {}).get("mde")
        mde = "-" if mde is None else (f"{mde:.3f}" if r["figure"].get("unit") == "cv" else f"{100 * mde:.1f} points")
        role = f"**{r['role']}**" if r.get("role") == "primary" else r.get("role", "-")
        lines.append(f"| {r['claim']} | {r['vs']} | {role} | {r['measured']} | {figure} | {ci} | {mde} | {r['verdict']} |")
    return lines + [""]


def ood_section(results: dict[str, Any], mcnemar: str) -> list[str]:
    """The benchmark table of the paper's layout (rows the arms; columns the held-out split, each out-of-distribution
    set and their average), then the target against each other start on the average and on each set."""
    ood = results.get("ood")
    if not ood:
        return []
    sets = ood["sets"]
    lines = ["", "## Out of distribution", "",
             "Accuracy % per arm on the held-out split, on each out-of-distribution set and on their average (each "
             "set weighs the same), 95% intervals over seeds and problems.", "",
             "| arm | held-out | " + " | ".join(sets) + " | average |", "|---" * (len(sets) + 3) + "|"]
    for name, a in results["arms"].items():
        cells = [f"{_pct(ood['arms'][f'{name}@{s}']['accuracy'])} {_ci(ood['arms'][f'{name}@{s}'])}" for s in sets]
        average = ood["arms"][name]
        lines.append(f"| {name} | {_pct(a['accuracy'])} {_ci(a)} | " + " | ".join(cells)
                     + f" | {_pct(average['accuracy'])} {_ci(average)} |")
    comparisons = {name: d for name, d in ood.items() if " vs " in name}
    lines += ["", f"| comparison (average of the out-of-distribution sets) | difference (points) | 95% CI | {mcnemar}shown |",
              "|---|---|---|---|" + ("---|" if mcnemar else "")]
    lines += [_difference_row(name, d, bool(mcnemar)) for name, d in comparisons.items()]
    lines += ["", "Per set (points, 95% CI; * where the interval excludes 0):", "",
              "| comparison | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for name, d in comparisons.items():
        cells = [f"{100 * x['difference']:+.1f} {_ci(x, '+.1f')}{' *' if x['significant'] else ''}"
                 for x in (d["sets"][s] for s in sets)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _ratio(m: dict[str, Any], loss: str) -> str:
    """`loss`'s mean squared minibatch update over dft's."""
    dft = m["losses"]["dft"]["mean_sq_update"]
    return number(m["losses"][loss]["mean_sq_update"] / dft if dft else None, ".3f")


def mechanism_section(results: dict[str, Any]) -> list[str]:
    """The gradients at fixed policies (`coldstart mechanism` on the base model and the starts' checkpoints): per
    policy over its seeds, then each measurement."""
    mechanism, policies = results.get("mechanism") or {}, results.get("mechanism_policies") or {}
    if not policies:
        return []

    def interval(figure: dict[str, Any], spec: str) -> str:
        low, high = figure["interval"]
        return f"{number(figure['mean'], spec)} [{number(low, spec)}, {number(high, spec)}]"

    seeds = max(p["seeds"] for p in policies.values())
    over = f"over its {seeds} seeds (t)" if seeds > 1 else "over the one seed's minibatches (bootstrap)"
    lines = ["", "## The mechanism at fixed policies", "",
             f"Per policy (`<start>@step<N>`: its warm-up checkpoint; 95% intervals {over}): Spearman's rho of each "
             "sample's NLL with its DFT gradient norm at a fixed length, and the verdict on the paper's assumption "
             "(the least compatible carry the largest gradients: the interval above 0); cadft's weighted per-sample "
             "second moment over Kish's prediction, the expectation of the same weights shuffled within each "
             "minibatch (the compatibility signal beyond unequal weights), and its verdict; SFT's rho; each "
             "update's mean squared norm over dft's (cadft as trained); the cosine of cadft's mean update with the "
             "full-sample gradient of the term it weighs (its bias in direction); the gradient noise scale "
             "B tr(cov) / |G|^2 (means over seeds). `gradients.png` shows the norms by compatibility decile and loss, "
             "`noise_scale.png` the noise scale over each warm-up.", "",
             "| policy | seeds | dft rho at fixed length | dft verdict | noise vs permuted weights | noise verdict | "
             "sft rho | cadft / dft | cadft cosine | noise scale dft | noise scale cadft |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in policies.items():
        lines.append(f"| {name} | {p['seeds']} | {interval(p['assumption'], '+.2f')} | {p['assumption']['verdict']} | "
                     f"{interval(p['noise'], '.3f')} | {p['noise']['verdict'] or '-'} | {number(p['sft_rho'], '+.2f')} | "
                     f"{number(p['cadft_over_dft'], '.3f')} | {number(p['cadft_cosine'], '.4f')} | "
                     f"{number(p['noise_scale']['dft'], '.3g')} | {number(p['noise_scale']['cadft'], '.3g')} |")
    lines += ["", "Each measurement (intervals over its minibatches; its folder holds the full report):", "",
              "| measurement | samples | dft rho | at fixed length | dft verdict | noise vs permuted weights | "
              "noise verdict | cadft / dft |", "|---|---|---|---|---|---|---|---|"]
    for name, m in mechanism.items():
        a, n = m["assumption"], m.get("nulls")
        effect, judged = ("-", "-") if not n else (
            f"{number(n['effect'], '.3f')} [{number(n['effect_interval'][0], '.3f')}, "
            f"{number(n['effect_interval'][1], '.3f')}]", n["verdict"])
        lines.append(f"| {name} | {m['samples']} | {number(a['dft']['rho'], '+.2f')} | "
                     f"{number(a['dft'].get('partial_rho'), '+.2f')} | {a['dft']['verdict']} | {effect} | {judged} | "
                     f"{_ratio(m, 'cadft')} |")
    return lines


def stability_section(results: dict[str, Any]) -> list[str]:
    """Per start, the warm-up's gradient-norm and loss stability (means over seeds), and each arm's spread of
    accuracy over seeds."""
    stability = results.get("stability") or {}
    if not stability:
        return []
    lines = ["", "## Stability during the warm-up", "",
             "Per start, means over seeds: the gradient norm's coefficient of variation and spikes (steps above 3x "
             "the median of the 5 before), the loss's roughness (mean absolute second difference over its mean).", "",
             "| start | grad-norm CV | spikes | loss roughness |", "|---|---|---|---|"]
    for start in [s for s in results["study"]["starts"] if s != "base"]:
        runs = [v for k, v in stability.items() if k.rpartition("-seed")[0] == start and v]
        cv, spikes, roughness = (mean_present([r[curve][key] for r in runs])
                                 for curve, key in (("grad_norm", "cv"), ("grad_norm", "spikes"), ("loss", "roughness")))
        lines.append(f"| {start} | {number(cv, '.3f')} | {number(spikes, '.1f')} | {number(roughness, '.3f')} |")
    spread = results.get("seed_spread") or {}
    if any(v is not None for v in spread.values()):
        lines += ["", "Spread of accuracy over seeds (standard deviation, points):", "", "| arm | sd |", "|---|---|"]
        lines += [f"| {arm} | {number(None if sd is None else 100 * sd, '.1f')} |" for arm, sd in spread.items()]
    return lines


def curves_section(results: dict[str, Any]) -> list[str]:
    """Per start, greedy held-out accuracy along GRPO (means over seeds) and the curve's area, then the target's
    area against each other start's, paired by seed."""
    curves = results.get("curves")
    if not curves:
        return []
    steps = sorted({step for c in curves["starts"].values() for step in c["steps"]})
    lines = ["", "## Learning curves during GRPO", "",
             "Greedy accuracy % on the first held-out problems (rl.curve_problems) every rl.curve_every GRPO steps, "
             "means over seeds; the area is the curve's mean height (trapezoids over the steps it spans, in points): "
             "a start that learns sooner has the larger one. 95% t intervals over seeds. `learning_curves.png` draws "
             "them.", "",
             "| start | area (points) | " + " | ".join(f"step {s}" for s in steps) + " |", "|---" * (len(steps) + 2) + "|"]
    for start, c in curves["starts"].items():
        at = dict(zip(c["steps"], c["mean"]))
        low, high = c["area"]["interval"]
        area = "-" if c["area"]["mean"] is None else (
            f"{_pct(c['area']['mean'])}" + ("" if low is None else f" [{_pct(low)}, {_pct(high)}]"))
        lines.append(f"| {start} | {area} | " + " | ".join(number(None if at.get(s) is None else 100 * at[s], ".1f")
                                                          for s in steps) + " |")
    if curves["comparisons"]:
        lines += ["", "| comparison | difference (points) | 95% CI | MDE (points) | shown |", "|---|---|---|---|---|"]
        lines += [_mde_row(name, d) for name, d in curves["comparisons"].items()]
    return lines


def coverage_section(results: dict[str, Any]) -> list[str]:
    """Per arm, pass@k at each k the eval's samples allow; per start, what GRPO changed at the largest k."""
    coverage = results.get("pass_at_k")
    if not coverage:
        return []
    ks, top = coverage["k"], coverage["k"][-1]
    lines = ["", "## Coverage: pass@k before and after GRPO", "",
             f"pass@k % on the held-out problems from eval.num_samples = {results['samples']} sampled completions per "
             "problem (unbiased estimator), means over seeds with 95% intervals over problems and seeds. Whether GRPO "
             "narrows what a policy can solve shows at the largest k. `pass_at_k.png` draws them.", "",
             "| arm | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for name, points in coverage["arms"].items():
        lines.append(f"| {name} | " + " | ".join(f"{_pct(p['accuracy'])} {_ci(p)}" for p in points) + " |")
    if coverage["rl_change"]:
        lines += ["", f"| start | pass@{top} after GRPO - before (points) | 95% CI | MDE (points) | shown |",
                  "|---|---|---|---|---|"]
        lines += [_mde_row(start, d) for start, d in coverage["rl_change"].items()]
    return lines


def _mde_row(name: str, d: dict[str, Any]) -> str:
    """A difference over seeds as a row: points, 95% CI, minimum detectable effect, shown."""
    return (f"| {name} | {100 * d['difference']:+.1f} | {_ci(d, '+.1f')} | {100 * d['mde']:.1f} | "
            f"{'yes' if d['significant'] else 'no'} |")


def _difference_row(name: str, d: dict[str, Any], mcnemar: bool) -> str:
    p = (f"{d['mcnemar_p']:.3f} | " if "mcnemar_p" in d else "- | ") if mcnemar else ""
    return f"| {name} | {100 * d['difference']:+.1f} | {_ci(d, '+.1f')} | {p}{'yes' if d['significant'] else 'no'} |"


def render(results: dict[str, Any]) -> str:
    """The comparison as Markdown: findings first, then the tables they come from."""
    seeds = results["seeds"]
    several = len(seeds) > 1
    mcnemar = "" if several else "McNemar p | "  # McNemar's test pairs the outcomes of one seed
    labels = diagnostic_labels(results)
    lines = ["# Did RL gain more from a CADFT start?", "",
             f"{results['problems']} held-out problems"
             + (f", each scored by its avg@{results['samples']} (the share of {results['samples']} samples graded "
                "correct)" if results.get("samples") else "") + f", seeds {seeds}; 95% intervals "
             f"({'seeds and problems: variance components, Satterthwaite t' if several else 'bootstrap over problems'}).",
             *([f"Regraded from the saved completions with the installed grader: {results['regraded']['changed']} of "
                f"{results['regraded']['records']} grades changed."] if "regraded" in results else []),
             f"{CLIPPED}: an interval end cut to the values the mean can take (an accuracy within [0, 100], a "
             "difference within the difference's range); the t interval reached past it.",
             "", *claims_section(results), "## Findings", "",
             "What the 95% intervals support; \"no difference shown\" where an interval includes 0. Each interval "
             f"holds on its own: the {_intervals_shown(results)} RL gains and paired comparisons below and the claims' "
             "intervals above are not corrected for being several (with no real difference anywhere, about 1 in 20 would still "
             "exclude 0).", "",
             *findings(results),
             "", "## Accuracy per arm", "", "| arm | accuracy % | 95% CI |", "|---|---|---|"]
    for name, a in results["arms"].items():
        lines.append(f"| {name} | {_pct(a['accuracy'])} | {_ci(a)} |")
    lines += ood_section(results, mcnemar)
    if results["rl_gain"]:
        lines += ["", "## RL gain (warm-up + GRPO minus warm-up)", "", f"| start | gain | 95% CI | {mcnemar}shown |",
                  "|---|---|---|---|" + ("---|" if mcnemar else "")]
        lines += [_difference_row(start, g, bool(mcnemar)) for start, g in results["rl_gain"].items()]
    lines += curves_section(results)
    lines += coverage_section(results)
    if results.get("adjusted"):
        lines += ["", "## After GRPO at equal accuracy after warm-up", "",
                  "Analysis of covariance over seeds: accuracy after GRPO = the start's level + one slope x accuracy "
                  "after warm-up; the difference of the levels, with a t interval on seeds x 2 - 3 degrees of freedom. "
                  "Unlike the RL gain, a seed whose warm-up ended low is not credited with regaining ground (regression "
                  "to the mean).", "", "| comparison | difference (points) | 95% CI | slope | MDE (points) | shown |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {100 * d['difference']:+.1f} | {_ci(d, '+.1f')} | {d['slope']:+.2f} | "
                  f"{100 * d['mde']:.1f} | {'yes' if d['significant'] else 'no'} |" for name, d in results["adjusted"].items()]
    lines += ["", "## Paired comparisons", "", f"| comparison | difference (points) | 95% CI | {mcnemar}shown |",
              "|---|---|---|---|" + ("---|" if mcnemar else "")]
    lines += [_difference_row(name, d, bool(mcnemar)) for name, d in results["comparisons"].items()]
    lines += stability_section(results) + mechanism_section(results)
    signal = results.get("signal") or {}
    if signal:
        on = [name for name, enabled in results.get("handoff", {}).items() if enabled]
        prompts = sorted({s["rollout_prompts"] for s in signal.values() if s.get("rollout_prompts")})
        pool = " (with curation, zero-variance before RL counts the whole prompt pool)" if results["handoff"].get("curate") else ""
        k = _k(results) or "k"
        header = DIAGNOSTIC_HEADER.format(pass_at_k=labels["pass@k"])
        lines += ["", "## What GRPO had to learn from", "",
                  f"Handoff: {', '.join(on) if on else 'RL prompts and warm-up checkpoint as they are'} (the same "
                  f"for every start). Before RL: the warmed policy's rollouts on {' or '.join(map(str, prompts)) or 'the'} "
                  f"RL prompts, k = {k} each, with GRPO's sampling settings (the handoff's){pool}. Zero-variance: the share "
                  "of groups all right or all wrong, by correctness alone before and during GRPO (format rewards "
                  "that differ within an all-wrong group give GRPO variance but no signal about correctness).", ""]
        if results.get("diagnostics") and "rl_gain" in next(iter(signal.values())):
            lines += ["Per start (means over seeds):", "", f"| start | RL gain | {header}",
                      "|---|---|---|---|---|---|---|---|---|"]
            for start, d in results["diagnostics"].items():
                gain = results["rl_gain"][start]["difference"]
                lines.append(f"| {start} | {100 * gain:+.1f} | {_diagnostic_cells(d)}")
            lines.append("")
        lines += ["Per run:", "", f"| run | after warm-up % | after GRPO % | {header} prompts kept | checkpoint |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, s in signal.items():
            kept = "all" if s.get("kept") is None else f"{s['kept']} of {s['pool']}"
            after = _pct(s["accuracy_rl"]) if "accuracy_rl" in s else "-"
            warm = _pct(s["accuracy_warmup"]) if "accuracy_warmup" in s else "-"
            lines.append(f"| {name} | {warm} | {after} | {_diagnostic_cells(s)} {kept} | {s.get('checkpoint') or '-'} |")
    lines += drift_section(results)
    associations = results.get("associations") or {}
    if associations:
        lines += ["", "## Diagnostics and RL gain across runs", "",
                  "Spearman's rank correlation between each run's diagnostic before GRPO and its RL gain; permutation "
                  "p-values, adjusted for the diagnostics tested (Benjamini-Hochberg). The runs of every start are pooled: "
                  "with few seeds per start, an association here mostly measures differences between the starts, "
                  "not what moves the RL gain within one start.", "",
                  "| diagnostic before GRPO | rho | p | adjusted p | runs |", "|---|---|---|---|---|"]
        for name, a in associations.items():
            lines.append(f"| {labels[name]} | {a['rho']:+.2f} | {a['p']:.3f} | {a['p_adjusted']:.3f} | {a['units']} |")
    return "\n".join(lines) + "\n"


# -- a run --------------------------------------------------------------------------------------------------------

ARMS = {"base": "base model", "warmup": "after warm-up", "rl": "after warm-up + GRPO"}
GAINS = {"warmup_gain": "warm-up gain (after warm-up - base)", "rl_gain": "RL gain (after GRPO - after warm-up)"}


def drift_section(results: dict[str, Any]) -> list[str]:
    """Per start (means over seeds), how far the warm-up and GRPO moved the policy and its entropy after each, on
    the policies' own samples of held-out prompts; nothing when no run measured it."""
    diagnostics = results.get("diagnostics") or {}
    if not any(d.get(key) is not None for d in diagnostics.values() for key in DRIFT):
        return []
    lines = ["", "## Drift and entropy", "",
             "KL per token of each stage's policy from the one before, and its entropy per token, on its own samples "
             "of the first held-out prompts (temperature 1; eval.drift_prompts), means over seeds.", "",
             "| start | " + " | ".join(f"{label} (nats/token)" for label in DRIFT.values()) + " |",
             "|---|" + "---|" * len(DRIFT)]
    for start, d in diagnostics.items():
        lines.append(f"| {start} | " + " | ".join(number(d.get(key), ".4f") for key in DRIFT) + " |")
    return lines


def results_table(results: dict[str, Any]) -> str:
    """A run's eval results as one Markdown table: accuracy per model with its 95% bootstrap interval, then each
    gain as a paired difference over the same problems (95% paired-bootstrap interval, McNemar's exact p)."""
    problems = next(iter(results["models"].values()))["problems"]
    lines = [f"Held-out accuracy, {problems} problems (greedy):", "", "| | accuracy | 95% interval |", "|---|---|---|"]
    for arm, label in ARMS.items():
        if arm in results["models"]:
            m = results["models"][arm]
            low, high = m["accuracy_ci"]
            lines.append(f"| {label} | {100 * m['accuracy']:.1f}% | [{100 * low:.1f}, {100 * high:.1f}] |")
    for key, label in GAINS.items():
        if key in results:
            g = results[key]
            shown = "interval above 0" if g["ci_low"] > 0 else "interval below 0" if g["ci_high"] < 0 else "no gain shown"
            lines.append(
                f"| {label} | {100 * g['difference']:+.1f} points | [{100 * g['ci_low']:+.1f}, {100 * g['ci_high']:+.1f}]"
                f" (McNemar p = {g['mcnemar_p']:.3g}; {shown}) |"
            )
    drift = (results.get("drift") or {}).get("rl")
    if drift:
        lines += ["", f"GRPO's drift from the warmed policy, on its own samples of {drift['completions']} held-out "
                  f"prompts (temperature 1): KL {drift['kl_per_token']:.4f} nats per token "
                  f"({drift['kl_per_completion']:.3f} per completion); entropy {drift['entropy_per_token']:.3f} nats "
                  "per token."]
    for name, by_arm in (results.get("benchmarks") or {}).items():
        problems = next(iter(by_arm.values()))["problems"]
        lines += ["", f"{name}, {problems} problems (greedy):", "", "| | accuracy | 95% interval |",
                  "|---|---|---|"]
        for arm, label in ARMS.items():
            if arm in by_arm:
                low, high = by_arm[arm]["accuracy_ci"]
                lines.append(f"| {label} | {100 * by_arm[arm]['accuracy']:.1f}% | [{100 * low:.1f}, {100 * high:.1f}] |")
    return "\n".join(lines) + "\n"


def _score(m: dict[str, Any], key: str) -> str:
    low, high = m[f"{key}_ci"]
    return f"{_pct(m[key])} [{_pct(low)}, {_pct(high)}]"


def benchmark_table(results: dict[str, Any]) -> str:
    """One model on several sets (`coldstart eval --benchmark a,b`), as benchmark tables lay it out: a row per set
    and the macro average, greedy accuracy and (with `eval.num_samples`) avg@k and the largest pass@k, in % with
    95% bootstrap intervals over problems."""
    sets = results["benchmarks"]
    first = next(iter(sets.values()))
    k = next((int(key[4:]) for key in first if key.startswith("avg@") and not key.endswith("_ci")), None)
    pass_k = max((int(key[5:]) for key in first if key.startswith("pass@") and not key.endswith("_ci")), default=None)
    head = ["set", "problems", "greedy accuracy"] + ([f"avg@{k}"] if k else []) + ([f"pass@{pass_k}"] if pass_k else [])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, m in sets.items():
        cells = [name, str(m["problems"]), _score(m, "accuracy")]
        cells += [_score(m, f"avg@{k}")] if k else []
        cells += [_score(m, f"pass@{pass_k}")] if pass_k else []
        lines.append("| " + " | ".join(cells) + " |")
    if "average" in results:
        m = results["average"]
        cells = [f"average of {m['sets']}", str(m["problems"]), _score(m, "accuracy")] + ([_score(m, f"avg@{k}")] if k else [])
        lines.append("| " + " | ".join(cells + (["-"] if pass_k else [])) + " |")
    note = f"; avg@{k}: mean correctness of {k} samples per problem" if k else ""
    return "\n".join([f"% correct, 95% intervals over problems (greedy decoding{note})", ""] + lines) + "\n"
