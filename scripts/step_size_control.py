"""The stability claim's step-size control: CADFT normalised by weights (DFT's step size) beside a comparison's
CADFT, DFT and SFT warm-ups, seed by seed (the README's CPU study quotes its figures).

    for s in 42 7 13 17 23; do coldstart warmup configs/compare_cpu.yaml --set warmup.loss=cadft \\
        --set warmup.cadft.normalize=weights --set seed=$s --set name=compare-cpu-ablation/cadft-weights-seed$s; done
    python scripts/step_size_control.py runs/compare-cpu runs/compare-cpu-ablation

Prints each warm-up's gradient-norm coefficient of variation, spikes and loss roughness, and the paired differences
of the CV over the seeds both folders hold, as the claims table computes them (`compare.cv_difference`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from coldstart.eval.compare import cv_difference, warmup_stability
from coldstart.runs import RunDir


def main(study: Path, ablation: Path) -> None:
    seeds = sorted(int(m.group(1)) for p in ablation.iterdir() if (m := re.fullmatch(r"cadft-weights-seed(\d+)", p.name)))
    if not seeds:
        sys.exit(f"{ablation}: no cadft-weights-seed<N> warm-ups (the docstring says how to run them)")
    folders = {"cadft-weights": ablation, "cadft": study, "dft": study, "sft": study}
    stability = {f"{arm}-seed{s}": warmup_stability(RunDir(folder / f"{arm}-seed{s}"))
                 for arm, folder in folders.items() for s in seeds}
    fmt = lambda v, spec=".3f": "-" if v is None else format(v, spec)
    print("warm-up: (seed, grad-norm CV, spikes, loss roughness)")
    for arm in folders:
        rows = [(s, stability[f"{arm}-seed{s}"]) for s in seeds]
        print(arm, ", ".join(f"({s}, {fmt(c['grad_norm']['cv'])}, {fmt(c['grad_norm']['spikes'], '.0f')}, "
                             f"{fmt(c['loss']['roughness'])})" for s, c in rows if c))
    for x, y in (("cadft-weights", "dft"), ("cadft", "cadft-weights"), ("cadft", "dft"), ("cadft-weights", "sft")):
        d = cv_difference(stability, x, y, seeds)
        if d is not None:
            interval = "" if d["ci_low"] is None else f" [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
            print(f"{x} minus {y}: CV {d['difference']:+.3f}{interval} over {d.get('seeds', 1)} seeds")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/step_size_control.py STUDY_DIR ABLATION_DIR (e.g. runs/compare-cpu "
                 "runs/compare-cpu-ablation)")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
