"""Figures written next to the stage outputs (matplotlib, no display needed)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compatibility_histogram(records: list[dict[str, Any]], path: Path, title: str, group: str = "style") -> None:
    """Histogram of compatibility, one series per `group` value (all samples when there is none)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in records:
        groups[str(r.get(group) or "all")].append(r["compatibility"])
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [i / 40 for i in range(41)]
    for name, values in sorted(groups.items()):
        ax.hist(values, bins=bins, alpha=0.55, label=f"{name} (n={len(values)})")
    ax.set_xlabel("compatibility exp(-NLL per token)")
    ax.set_ylabel("samples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)


def weights_over_training(metrics: list[dict[str, Any]], path: Path) -> None:
    """Per-style mean compatibility and CADFT weight against the optimizer step."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, what, label in ((axes[0], "compat", "compatibility"), (axes[1], "weight", "CADFT weight")):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for m in metrics:
            for key, value in m.items():
                if key.startswith("style/") and key.endswith(f"/{what}"):
                    series[key.split("/")[1]].append((m["step"], value))
        for style, points in sorted(series.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=style)
        ax.set_xlabel("step")
        ax.set_ylabel(f"mean {label}")
        ax.set_title(f"{label} by style")
        ax.legend(fontsize=8)
    _save(fig, path)


def mismatch_figure(base: list[dict[str, Any]] | None, warmed: list[dict[str, Any]], correct_per_prompt: list[int],
                    k: int, path: Path) -> None:
    """Left: demonstration compatibility under the base and the warmed policy. Right: correct rollouts per prompt."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bins = [i / 40 for i in range(41)]
    for name, records in (("base", base), ("warmed", warmed)):
        if records:
            axes[0].hist([r["compatibility"] for r in records], bins=bins, alpha=0.55, label=name)
    axes[0].set_xlabel("compatibility")
    axes[0].set_ylabel("demonstrations")
    axes[0].legend()
    axes[0].set_title("Demonstrations under each policy")
    counts = [correct_per_prompt.count(c) for c in range(k + 1)]
    colors = ["tab:red" if c in (0, k) else "tab:blue" for c in range(k + 1)]
    axes[1].bar(range(k + 1), counts, color=colors)
    axes[1].set_xlabel(f"correct rollouts out of k={k} (red: zero-variance groups)")
    axes[1].set_ylabel("RL prompts")
    axes[1].set_title("What GRPO will see")
    _save(fig, path)


def pass_rate_histogram(correct: list[int], kept: list[bool], k: int, path: Path) -> None:
    """RL prompts by correct rollouts out of k under the warmed policy, split into those curation kept and dropped."""
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(k + 1)
    kept_counts = [sum(c == x and keep for c, keep in zip(correct, kept)) for x in xs]
    dropped = [sum(c == x and not keep for c, keep in zip(correct, kept)) for x in xs]
    ax.bar(xs, kept_counts, color="tab:blue", label=f"kept for GRPO ({sum(kept)})")
    ax.bar(xs, dropped, bottom=kept_counts, color="tab:gray", label=f"dropped ({len(kept) - sum(kept)})")
    ax.set_xticks(list(xs))
    ax.set_xlabel(f"correct rollouts out of k={k} (pass rate x k)")
    ax.set_ylabel("RL prompts")
    ax.set_title("RL prompt pool under the warmed policy")
    ax.legend(fontsize=8)
    _save(fig, path)


def rl_curves(metrics: list[dict[str, Any]], path: Path) -> None:
    """Reward mean, share of zero-variance groups and completion length against the GRPO step."""
    panels = (("reward", "reward mean"), ("zero_variance_share", "zero-variance groups"),
              ("completions/mean_length", "completion length"))
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, (key, label) in zip(axes, panels):
        points = [(m["step"], m[key]) for m in metrics if key in m]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_xlabel("step")
        ax.set_title(label)
    _save(fig, path)


def _interval_bars(ax, names: list[str], values: list[dict[str, Any]], key: str, ylabel: str) -> None:
    centre = [100 * v[key] for v in values]
    err = [[c - 100 * v["ci_low"] for c, v in zip(centre, values)], [100 * v["ci_high"] - c for c, v in zip(centre, values)]]
    ax.bar(names, centre, yerr=err, capsize=4, color=["tab:orange" if "cadft" in n else "tab:blue" for n in names])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=30)


def _by_start(per_run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A comparison's per-run values (`<start>-seed<N>`, or a bare run name) grouped by start, then `seed<N>`."""
    by_start: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, value in per_run.items():
        start, _, seed = name.rpartition("-seed")
        by_start[start or name][f"seed{seed}" if start else name] = value
    return dict(by_start)


def compare_figures(results: dict[str, Any], curves: dict[str, list[dict[str, Any]]],
                    compat: dict[str, list[float]], out: Path, diagnostics: dict[str, str] | None = None) -> None:
    """accuracy.png (per arm, 95% CI), rl_gain.png (per start), rewards.png (GRPO curves), compatibility.png, and
    for the `diagnostics` named (key in each run's `signal` -> label): diagnostics.png (each run's value per start)
    and gain_vs_diagnostics.png (each run's RL gain against its value before GRPO)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    _interval_bars(ax, list(results["arms"]), list(results["arms"].values()), "accuracy", "accuracy % (95% CI)")
    ax.set_title("Held-out accuracy per arm")
    _save(fig, out / "accuracy.png")
    if results["rl_gain"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        _interval_bars(ax, list(results["rl_gain"]), list(results["rl_gain"].values()), "difference",
                       "RL gain, points (95% CI)")
        ax.set_title("What GRPO added to each start")
        _save(fig, out / "rl_gain.png")
    if curves:
        by_start = _by_start(curves)
        fig, axes = plt.subplots(1, len(by_start), figsize=(3.6 * len(by_start), 3.6), sharey=True, squeeze=False)
        for ax, (start, runs) in zip(axes[0], by_start.items()):
            for seed, metrics in runs.items():
                points = [(m["step"], m["reward"]) for m in metrics if "reward" in m]
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=seed)
            ax.set_xlabel("GRPO step")
            ax.set_title(start)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("reward mean")
        fig.suptitle("GRPO reward per start, one line per seed", fontsize=10)
        _save(fig, out / "rewards.png")
    if compat:
        # a panel per start, seeds as outlines: twenty filled histograms on one axis hide each other
        by_start = _by_start(compat)
        fig, axes = plt.subplots(1, len(by_start), figsize=(3.6 * len(by_start), 3.6), sharex=True, sharey=True,
                                 squeeze=False)
        bins = [i / 40 for i in range(41)]
        for ax, (start, runs) in zip(axes[0], by_start.items()):
            for seed, values in runs.items():
                ax.hist(values, bins=bins, histtype="step", linewidth=1.2, label=seed)
            ax.set_xlabel("compatibility")
            ax.set_title(start)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("demonstrations")
        fig.suptitle("Demonstration compatibility under the warmed policy, one line per seed", fontsize=10)
        _save(fig, out / "compatibility.png")
    if diagnostics and results.get("signal"):
        diagnostic_figures(results, diagnostics, out)
    if results.get("curves"):
        learning_curves_figure(results["curves"], out / "learning_curves.png")
    if results.get("pass_at_k"):
        pass_at_k_figure(results["pass_at_k"], out / "pass_at_k.png")
    if results.get("ood"):
        ood_figure(results, out / "ood.png")
    if results.get("mechanism_policies"):
        mechanism_figure(results["mechanism_policies"], out / "noise_scale.png")
        policy_deciles_figure(results["mechanism_policies"], out / "gradients.png")


def learning_curves_figure(curves: dict[str, Any], path: Path) -> None:
    """Greedy held-out accuracy along GRPO per start (the mean over seeds), the curve's area in the legend."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for start, c in curves["starts"].items():
        area = c["area"]["mean"]
        label = start + ("" if area is None else f" (area {100 * area:.1f})")
        ax.plot(c["steps"], [float("nan") if v is None else 100 * v for v in c["mean"]], marker="o", label=label)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("greedy held-out accuracy %")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Learning curves during GRPO (mean over seeds)")
    ax.legend(fontsize=8)
    _save(fig, path)


def pass_at_k_figure(coverage: dict[str, Any], path: Path) -> None:
    """pass@k against k per start, after the warm-up (dashed) and after GRPO (solid), the mean over seeds."""
    fig, ax = plt.subplots(figsize=(7, 4))
    colours: dict[str, Any] = {}
    for name, points in coverage["arms"].items():
        start, after_rl = name.removesuffix("+grpo"), name.endswith("+grpo")
        line = ax.plot(coverage["k"], [100 * p["accuracy"] for p in points], marker="o", color=colours.get(start),
                       linestyle="-" if after_rl else "--", label=name)[0]
        colours.setdefault(start, line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xticks(coverage["k"], [str(k) for k in coverage["k"]])
    ax.set_xlabel("k (sampled completions per problem)")
    ax.set_ylabel("pass@k % on held-out problems")
    ax.set_title("Coverage before (dashed) and after (solid) GRPO, mean over seeds")
    ax.legend(fontsize=8)
    _save(fig, path)


def mechanism_figure(mechanism: dict[str, Any], path: Path) -> None:
    """The gradient noise scale per loss over each start's warm-up (the mean over seeds): a panel per start, from
    the base model (step 0) through that start's measured checkpoints (`<start>@step<N>`), so that no line joins
    two starts' policies."""
    policies = [(name, *name.rsplit("@step", 1)) for name in mechanism]
    base = [(0, name) for name, start, _ in policies if start == "base"]
    starts = list(dict.fromkeys(start for _, start, _ in policies if start != "base")) or ["base"]
    fig, axes = plt.subplots(1, len(starts), figsize=(3.5 * len(starts) + 1, 3.8), sharex=True, sharey=True,
                             squeeze=False)
    for ax, start in zip(axes[0], starts):
        points = base + sorted((int(step), name) for name, s, step in policies if s == start and s != "base")
        for loss in ("sft", "dft", "cadft"):
            values = [mechanism[name]["noise_scale"][loss] for _, name in points]
            ax.plot([step for step, _ in points], [float("nan") if v is None else v for v in values], marker="o",
                    label=loss)
        ax.set_title(f"{start} warm-up" if start != "base" else "base model")
        ax.set_xlabel("warm-up step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("noise scale B tr(cov) / |G|^2")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Gradient noise per loss at fixed policies (mean over seeds)")
    _save(fig, path)


def ood_figure(results: dict[str, Any], path: Path) -> None:
    """Per arm, held-out accuracy beside the out-of-distribution sets' average (each set weighing the same),
    with 95% intervals."""
    names = list(results["arms"])
    fig, ax = plt.subplots(figsize=(8, 4))
    x = range(len(names))
    ood = "out of distribution (average of " + ", ".join(results["ood"]["sets"]) + ")"
    for offset, (label, values) in zip((-0.2, 0.2), (("held-out", results["arms"]), (ood, results["ood"]["arms"]))):
        centre = [100 * values[n]["accuracy"] for n in names]
        err = [[c - 100 * values[n]["ci_low"] for c, n in zip(centre, names)],
               [100 * values[n]["ci_high"] - c for c, n in zip(centre, names)]]
        ax.bar([i + offset for i in x], centre, width=0.4, yerr=err, capsize=3, label=label)
    ax.set_xticks(list(x), names, rotation=30)
    ax.set_ylabel("accuracy % (95% CI)")
    ax.set_title("In- and out-of-distribution accuracy per arm")
    ax.legend(fontsize=8)
    _save(fig, path)


def diagnostic_figures(results: dict[str, Any], labels: dict[str, str], out: Path) -> None:
    """diagnostics.png: per start, each seed's RL gain and diagnostics (dots) and their mean (bar); and
    gain_vs_diagnostics.png: each run's RL gain against each diagnostic, with Spearman's rho across runs."""
    runs = list(results["signal"].values())
    starts = list(dict.fromkeys(r["start"] for r in runs))
    others = iter(["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:gray", "tab:olive"])
    colors = {s: "tab:orange" if s == "cadft" else next(others, "tab:gray") for s in starts}
    percent = {"pass@1", "pass@k", "pre_rl_zero_variance", "clipped", "rl_zero_variance", "rl_gain"}
    panels = {**({"rl_gain": "RL gain (points)"} if "rl_gain" in runs[0] else {}), **labels}
    fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(3.4 * ((len(panels) + 1) // 2), 6.4), squeeze=False)
    for ax, (key, label) in zip(axes.flat, panels.items()):
        scale = 100 if key in percent else 1
        for i, start in enumerate(starts):
            values = [scale * r[key] for r in runs if r["start"] == start and r.get(key) is not None]
            if values:
                ax.bar(i, sum(values) / len(values), color=colors[start], alpha=0.35)
                ax.plot([i] * len(values), values, "o", color=colors[start], markersize=4)
        ax.set_xticks(range(len(starts)), starts, rotation=30)
        ax.set_title(label + (" %" if scale == 100 and key != "rl_gain" else ""), fontsize=9)
        ax.axhline(0, color="black", linewidth=0.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Per start: each seed (dots) and the mean (bar); before GRPO unless named", fontsize=10)
    _save(fig, out / "diagnostics.png")
    if "rl_gain" not in runs[0]:
        return
    before = {k: v for k, v in labels.items() if not k.startswith("rl_")}
    associations = results.get("associations") or {}
    fig, axes = plt.subplots(2, (len(before) + 1) // 2, figsize=(3.6 * ((len(before) + 1) // 2), 6.6), squeeze=False)
    for ax, (key, label) in zip(axes.flat, before.items()):
        scale = 100 if key in percent else 1
        for start in starts:
            points = [(scale * r[key], 100 * r["rl_gain"]) for r in runs if r["start"] == start and r.get(key) is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], "o", color=colors[start], label=start)
        a = associations.get(key)
        ax.set_title(f"{label}\n" + (f"rho {a['rho']:+.2f}, adjusted p {a['p_adjusted']:.2f}" if a else "not tested"),
                     fontsize=9)
        ax.set_ylabel("RL gain (points)")
        ax.axhline(0, color="black", linewidth=0.5)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(before):]:
        ax.set_visible(False)
    fig.suptitle("Each run's RL gain against the warmed policy's figures on RL prompts before GRPO", fontsize=10)
    _save(fig, out / "gain_vs_diagnostics.png")


def _decile_lines(ax, deciles: dict[str, list[dict[str, float]]]) -> None:
    """One line per loss: the mean per-sample gradient norm per compatibility decile (the least compatible left)."""
    for loss, rows in deciles.items():
        ax.plot([d["decile"] for d in rows], [d["value"] for d in rows], marker="o", label=loss)
    ax.set_yscale("log")  # SFT's norms are several times DFT's
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("compatibility decile (1: least compatible)")


def gradient_deciles(results: dict[str, Any], path: Path) -> None:
    """One policy's mean per-sample gradient norm per compatibility decile, a line per loss."""
    from coldstart.gradients import norm_deciles

    fig, ax = plt.subplots(figsize=(7, 4))
    _decile_lines(ax, norm_deciles(results["samples"]))
    ax.set_ylabel("mean per-sample gradient norm (log)")
    ax.set_title(f"{results['model']}: {len(results['samples'])} demonstrations")
    ax.legend(fontsize=8)
    _save(fig, path)


def policy_deciles_figure(mechanism: dict[str, Any], path: Path) -> None:
    """The mean per-sample gradient norm per compatibility decile and loss (the mean over seeds), a panel per
    measured policy."""
    columns = min(4, len(mechanism))
    rows = -(-len(mechanism) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.0 * rows), sharey=True, squeeze=False)
    for ax, (name, m) in zip(axes.flat, mechanism.items()):
        _decile_lines(ax, m["deciles"])
        ax.set_title(f"{name} ({m['seeds']} seed{'s' * (m['seeds'] > 1)}, {m['samples']} demonstrations)", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("mean gradient norm (log)")
    for ax in list(axes.flat)[len(mechanism):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Per-sample gradient norm by compatibility decile at fixed policies", fontsize=10)
    _save(fig, path)
