"""Writing and re-rendering reports: a run's results table, the comparison (`compare/`) and a run's mismatch report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from coldstart.errors import ColdstartError
from coldstart.eval.compare import analyse, diagnostic_labels, render
from coldstart.mismatch import render_markdown
from coldstart.plots import compare_figures
from coldstart.runs import RunDir, read_jsonl


ARMS = {"base": "base model", "warmup": "after warm-up", "rl": "after warm-up + GRPO"}
GAINS = {"warmup_gain": "warm-up gain (after warm-up - base)", "rl_gain": "RL gain (after GRPO - after warm-up)"}


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
    return "\n".join(lines) + "\n"


def write_compare(out: Path, results: dict[str, Any], runs: dict[str, RunDir]) -> None:
    """results.json, report.md and the figures, written next to `out` and renamed into place."""
    curves = {name: read_jsonl(r.stage_dir("rl") / "metrics.jsonl") for name, r in runs.items() if r.finished("rl")}
    compat = {
        name: [d["compatibility"] for d in read_jsonl(r.stage_dir("handoff") / "demonstrations.jsonl") if d["policy"] == "warmed"]
        for name, r in runs.items()
        if r.finished("handoff")
    }
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "results.json").write_text(json.dumps({**results, "runs": {n: str(r.root) for n, r in runs.items()}}, indent=2) + "\n")
    (tmp / "report.md").write_text(render(results))
    compare_figures(results, curves, compat, tmp, diagnostic_labels(results))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def rerender(path: Path, regrade: bool = False) -> list[Path]:
    """Re-render the reports found under `path` (a comparison's folder or a run directory) from their JSON; a
    comparison is analysed again from its runs' per-problem records and manifests (with `regrade`, their saved
    completions graded again; the records themselves stay as they are)."""
    path = Path(path)
    written = []
    compare = path if (path / "results.json").is_file() and path.name == "compare" else path / "compare"
    if (compare / "results.json").is_file():
        results = json.loads((compare / "results.json").read_text())
        runs = {name: RunDir(root) for name, root in results.pop("runs").items()}
        study = results.get("study") or {  # written before comparisons saved their study: read it off the results
            "starts": list(dict.fromkeys(name.rpartition("-seed")[0] for name in runs)), "seeds": results["seeds"],
            "rl": bool(results["rl_gain"]), "handoff": results.get("handoff", {"curate": False, "select_checkpoint": False}),
        }
        results = analyse(study, runs, regrade)
        write_compare(compare, results, runs)
        written.append(compare / "report.md")
    if regrade and not written:
        raise ColdstartError(f"{path}: --regrade regrades a comparison; no compare/results.json here")
    results = path / "eval" / "results.json"
    if results.is_file():
        (path / "eval" / "report.md").write_text(results_table(json.loads(results.read_text())))
        written.append(path / "eval" / "report.md")
    mismatch = path / "handoff" / "mismatch.json"
    if mismatch.is_file():
        (path / "handoff" / "mismatch.md").write_text(render_markdown(json.loads(mismatch.read_text())))
        written.append(path / "handoff" / "mismatch.md")
    if not written:
        raise ColdstartError(f"{path}: no compare/results.json, eval/results.json or handoff/mismatch.json to render")
    return written
