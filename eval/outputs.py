"""A comparison's and a run's report files: written from an analysis, and written again from their saved JSON
(`coldstart report`), a comparison analysed again from its runs' records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coldstart.errors import ColdstartError
from coldstart.eval.compare import analyse
from coldstart.eval.mechanism import retest
from coldstart.eval.report import diagnostic_labels, render, results_table
from coldstart.mismatch import render_markdown
from coldstart.plots import compare_figures
from coldstart.runs import RunDir, folder_in_place, read_jsonl


def write_compare(out: Path, results: dict[str, Any], runs: dict[str, RunDir]) -> None:
    """results.json, report.md and the figures, written next to `out` and renamed into place."""
    curves = {name: read_jsonl(r.stage_dir("rl") / "metrics.jsonl") for name, r in runs.items() if r.finished("rl")}
    compat = {
        name: [d["compatibility"] for d in read_jsonl(r.stage_dir("handoff") / "demonstrations.jsonl") if d["policy"] == "warmed"]
        for name, r in runs.items()
        if r.finished("handoff")
    }
    with folder_in_place(out) as tmp:
        (tmp / "results.json").write_text(json.dumps({**results, "runs": {n: str(r.root) for n, r in runs.items()}},
                                                     indent=2) + "\n")
        (tmp / "report.md").write_text(render(results))
        compare_figures(results, curves, compat, tmp, diagnostic_labels(results))


def rerender(path: Path, regrade: bool = False) -> list[Path]:
    """Re-render the reports found under `path` (a comparison's folder or a run directory) from their JSON; a
    comparison is analysed again from its runs' per-problem records and manifests (with `regrade`, their saved
    completions graded again; the records themselves stay as they are), its mechanism checks' tests from their
    per-sample records."""
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
        mechanism = {name: Path(m["dir"]) for name, m in (results.get("mechanism") or {}).items()}
        for folder in mechanism.values():
            retest(folder)
        results = analyse(study, runs, regrade, mechanism)
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
