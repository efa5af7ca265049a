"""The pre-RL mismatch report: how far the warmed policy still is from the demonstrations, and what GRPO will see.

Inputs are plain records (scored demonstrations, graded rollouts); the functions here compute the figures and the
verdicts and render Markdown. The handoff stage does the model work and the I/O.
"""

from __future__ import annotations

from typing import Any

from coldstart.compatibility import summarize
from coldstart.statistics import pass_at_k


def rollout_stats(groups: list[list[dict[str, Any]]], max_completion_length: int) -> dict[str, Any]:
    """Figures over rollouts grouped by prompt; each rollout has `correct`, `boxed`, `finished`, `num_tokens` and
    `entropy` (the policy's mean token entropy over it, in nats)."""
    k = len(groups[0])
    flat = [r for g in groups for r in g]
    correct = [sum(r["correct"] for r in g) for g in groups]
    return {
        "prompts": len(groups),
        "k": k,
        "pass@1": sum(correct) / len(flat),
        f"pass@{k}": sum(pass_at_k(k, c, k) for c in correct) / len(groups),
        "all_correct": sum(c == k for c in correct) / len(groups),
        "all_wrong": sum(c == 0 for c in correct) / len(groups),
        "zero_variance": sum(c in (0, k) for c in correct) / len(groups),
        "truncated": sum(not r["finished"] for r in flat) / len(flat),
        "format": sum(r["boxed"] for r in flat) / len(flat),
        "mean_length": sum(r["num_tokens"] for r in flat) / len(flat),
        "entropy": sum(r["entropy"] for r in flat) / len(flat) if all("entropy" in r for r in flat) else None,
        "max_completion_length": max_completion_length,
        "correct_per_prompt": correct,
    }


def verdicts(base: dict[str, Any] | None, warmed: dict[str, Any], rollouts: dict[str, Any]) -> list[str]:
    """Plain-language conclusions, one sentence each."""
    k, out = rollouts["k"], []
    zero = rollouts["zero_variance"]
    out.append(
        f"{zero:.0%} of RL prompts give zero-variance groups at k={k} (all right {rollouts['all_correct']:.0%}, all "
        f"wrong {rollouts['all_wrong']:.0%}): GRPO gets no advantage from them."
        + (" Most of the RL data carries no signal: use easier or harder prompts, or a larger group." if zero > 0.5 else "")
    )
    out.append(f"pass@1 is {rollouts['pass@1']:.0%} and pass@{k} is {rollouts[f'pass@{k}']:.0%} on the RL prompts.")
    trunc = rollouts["truncated"]
    out.append(
        f"{trunc:.0%} of rollouts hit max_completion_length={rollouts['max_completion_length']}"
        + (": clipped answers score 0, raise rl.max_completion_length." if trunc > 0.1 else ".")
    )
    fmt = rollouts["format"]
    out.append(
        f"{fmt:.0%} of rollouts end in a \\boxed{{}} answer"
        + (": the format reward will dominate early RL." if fmt < 0.5 else ".")
    )
    median = warmed["compatibility_quantiles"]["q50"]
    if base is not None:
        out.append(
            f"Median demonstration compatibility went from {base['compatibility_quantiles']['q50']:.2f} (base) to "
            f"{median:.2f} (warmed)."
        )
    styles = warmed.get("by_style") or {}
    if len(styles) > 1:
        low = min(styles, key=lambda s: styles[s]["compatibility_mean"])
        high = max(styles, key=lambda s: styles[s]["compatibility_mean"])
        out.append(
            f"The warmed policy is furthest from the '{low}' demonstrations (mean compatibility "
            f"{styles[low]['compatibility_mean']:.2f}) and closest to '{high}' ({styles[high]['compatibility_mean']:.2f})."
        )
    return out


def build_report(base_records: list[dict] | None, warmed_records: list[dict], rollouts: dict[str, Any],
                 curation: dict[str, Any] | None = None, checkpoints: list[dict[str, Any]] | None = None,
                 temperature: dict[str, Any] | None = None, drift: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's figures; `curation` (`coldstart.curation.curation_summary`), `checkpoints` (the candidates
    the handoff chose among) and `temperature` (`coldstart.temperature.calibrate`'s curve and choice) when the
    handoff acted on them; `drift` (`coldstart.drift.summarize` of the warmed policy against the base, and of the
    base alone) when measured."""
    base = summarize(base_records) if base_records else None
    warmed = summarize(warmed_records)
    said = verdicts(base, warmed, rollouts)
    if curation is not None:
        after = curation["zero_variance_kept"]
        said.append(
            f"Curation kept {curation['kept']} of {curation['pool']} RL prompts; zero-variance groups at "
            f"k={curation['k']} go from {curation['zero_variance_pool']:.0%} of the pool to "
            + (f"{after:.0%} of the kept prompts." if after is not None else "none left: no prompt was kept.")
        )
    if checkpoints:
        picked = next(c for c in checkpoints if c["picked"])
        said.append(f"The warm-up checkpoint handed over is {picked['name']} (step {picked['step']}): pass@k "
                    f"{picked['pass@k']:.0%}, the highest of {len(checkpoints)} candidates.")
    if temperature:
        share = next(r["mixed_share"] for r in temperature["curve"] if r["temperature"] == temperature["chosen"])
        said.append(f"GRPO samples at temperature {temperature['chosen']:g} ({temperature['reason']}): {share:.0%} "
                    "of the calibration's groups were mixed there.")
    if drift:
        said.append(f"The warm-up moved the policy {drift['warmed']['kl_per_token']:.3f} nats per token from the base "
                    f"(KL on its own samples of {drift['warmed']['completions']} held-out prompts); its entropy is "
                    f"{drift['warmed']['entropy_per_token']:.3f} nats per token, the base's "
                    f"{drift['base']['entropy_per_token']:.3f}.")
    return {
        "demonstrations": {"base": base, "warmed": warmed},
        "rollouts": rollouts,
        "drift": drift,
        "curation": curation,
        "checkpoints": checkpoints,
        "temperature": temperature,
        "verdicts": said,
    }


def render_markdown(report: dict[str, Any]) -> str:
    r = report["rollouts"]
    k = r["k"]
    lines = ["# Pre-RL mismatch report", "", "## Verdicts", ""]
    lines += [f"- {v}" for v in report["verdicts"]]
    lines += ["", f"## Rollouts of the warmed policy ({r['prompts']} RL prompts x k={k})", "", "| figure | value |", "|---|---|"]
    for key in ("pass@1", f"pass@{k}", "all_correct", "all_wrong", "zero_variance", "truncated", "format"):
        lines.append(f"| {key} | {r[key]:.3f} |")
    lines.append(f"| mean length (tokens) | {r['mean_length']:.1f} |")
    if r.get("entropy") is not None:
        lines.append(f"| mean token entropy (nats) | {r['entropy']:.3f} |")
    lines += ["", "## Demonstration compatibility", "", "| policy | mean | q05 | q25 | q50 | q75 | q95 |", "|---|---|---|---|---|---|---|"]
    for name, d in report["demonstrations"].items():
        if d is None:
            continue
        q = d["compatibility_quantiles"]
        lines.append(
            f"| {name} | {d['compatibility_mean']:.3f} | {q['q05']:.3f} | {q['q25']:.3f} | {q['q50']:.3f} | "
            f"{q['q75']:.3f} | {q['q95']:.3f} |"
        )
    for group in ("by_style", "by_source"):
        warmed = report["demonstrations"]["warmed"].get(group)
        if not warmed:
            continue
        base = (report["demonstrations"]["base"] or {}).get(group, {})
        lines += ["", f"### {group.replace('_', ' ')}", "", "| group | n | base mean | warmed mean |", "|---|---|---|---|"]
        for name, w in warmed.items():
            b = base.get(name, {}).get("compatibility_mean")
            lines.append(f"| {name} | {w['count']} | {'-' if b is None else f'{b:.3f}'} | {w['compatibility_mean']:.3f} |")
    if report.get("drift"):
        d = report["drift"]
        lines += ["", f"## Drift from the base ({d['warmed']['completions']} held-out prompts, one sample each at "
                  "temperature 1)", "", "| policy | KL from the base (nats/token) | KL per completion | entropy (nats/token) "
                  "| tokens |", "|---|---|---|---|---|"]
        for name, x in (("warmed", d["warmed"]), ("base", d["base"])):
            kl = f"{x['kl_per_token']:.4f} | {x['kl_per_completion']:.3f}" if "kl_per_token" in x else "- | -"
            lines.append(f"| {name} | {kl} | {x['entropy_per_token']:.3f} | {x['tokens']} |")
    if report.get("curation"):
        c = report["curation"]
        lines += ["", f"## RL prompts kept for GRPO ({c['kept']} of {c['pool']}, k={c['k']})", "",
                  "| reason | prompts |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in c["by_reason"].items()]
        lines += ["", "Per prompt: `prompts.jsonl`; pass rates: `pass_rates.png`."]
    if report.get("temperature"):
        t = report["temperature"]
        lines += ["", f"## Sampling temperature (rl.temperature: auto, target {t['target']:.0%} mixed groups)", "",
                  "Mixed groups: neither all right nor all wrong (GRPO's learning signal); p(1-p): the mean Bernoulli "
                  "variance of the groups' pass rates. Rolled out with another seed than the figures above.", "",
                  "| temperature | mixed groups | p(1-p) | chosen |", "|---|---|---|---|"]
        lines += [f"| {r['temperature']:g} | {r['mixed_share']:.3f} | {r['bernoulli_variance']:.3f} | "
                  f"{'yes' if r['temperature'] == t['chosen'] else ''} |" for r in t["curve"]]
    if report.get("checkpoints"):
        lines += ["", "## Warm-up checkpoints (highest pass@k handed over)", "",
                  "| checkpoint | step | pass@1 | pass@k | zero-variance | handed over |", "|---|---|---|---|---|---|"]
        lines += [f"| {c['name']} | {c['step']} | {c['pass@1']:.3f} | {c['pass@k']:.3f} | {c['zero_variance']:.3f} | "
                  f"{'yes' if c['picked'] else ''} |" for c in report["checkpoints"]]
    return "\n".join(lines) + "\n"
