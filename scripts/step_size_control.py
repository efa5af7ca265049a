"""The stability claim's step-size control: CADFT normalised by weights (DFT's step size) beside a comparison's CADFT
and DFT warm-ups, seed by seed: the README's ablation figures.

    for s in 42 7 13 17 23; do coldstart warmup configs/compare_cpu.yaml --set warmup.loss=cadft \
        --set warmup.cadft.normalize=weights --set seed=$s --set name=compare-cpu-ablation/cadft-weights-seed$s; done
    python scripts/step_size_control.py runs/compare-cpu runs/compare-cpu-ablation

Prints each warm-up's gradient-norm coefficient of variation, spikes and loss roughness, and the paired differences
of the CV over the seeds both folders hold, with the claims table's interval (a t interval over seeds)."""

from __future__ import annotations

import sys
from pathlib import Path

from coldstart.runs import RunDir
from coldstart.statistics import seed_problem_interval
from coldstart.eval.compare import warmup_stability


def main(study: Path, ablation: Path) -> None:
    seeds = sorted(int(p.name.rpartition("seed")[2]) for p in ablation.glob("cadft-weights-seed*"))
    arms = {"cadft-weights": ablation / "cadft-weights-seed{}", "cadft": study / "cadft-seed{}",
            "dft": study / "dft-seed{}", "sft": study / "sft-seed{}"}
    curves = {arm: {s: warmup_stability(RunDir(Path(str(folder).format(s)))) for s in seeds}
              for arm, folder in arms.items()}
    print("arm: (seed, grad-norm CV, spikes, loss roughness) per seed")
    for arm, per_seed in curves.items():
        print(arm, [(s, round(c["grad_norm"]["cv"], 3), c["grad_norm"]["spikes"], round(c["loss"]["roughness"], 3))
                    for s, c in per_seed.items() if c])
    for x, y in (("cadft-weights", "dft"), ("cadft", "cadft-weights"), ("cadft", "dft")):
        d = [[curves[x][s]["grad_norm"]["cv"] - curves[y][s]["grad_norm"]["cv"]] for s in seeds
             if curves[x][s] and curves[y][s]]
        if len(d) > 1:
            r = seed_problem_interval(d)
            print(f"{x} minus {y}: CV {r['mean']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] over {len(d)} seeds")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
