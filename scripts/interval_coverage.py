"""How often `coldstart.statistics.seed_problem_interval`'s 95% interval covers the true mean, in simulation: the
README's coverage figures. `python scripts/interval_coverage.py [trials]` (4,000 a case by default, about two
minutes on 2 cores).

Gaussian scores mean + seed effect + problem effect + noise (sd 0.3), as tests/test_eval.py simulates them, and
0/1 scores as the comparison grades them: each problem right with probability sigmoid(logit(0.4) + seed effect +
problem effect), the true mean the population's (the average of that probability over many draws of both
effects). Designs: 3 seeds x 150 problems and 5 seeds x 120 (the CPU study's)."""

from __future__ import annotations

import sys

import numpy as np
from scipy.special import expit, logit

from coldstart.statistics import seed_problem_interval

CASES = {  # name: (kind, seed effect sd, problem effect sd)
    "gaussian, seeds dominate": ("gaussian", 0.05, 0.01),
    "gaussian, problems dominate": ("gaussian", 0.005, 0.25),
    "gaussian, both alike": ("gaussian", 0.03, 0.212),
    "0/1, seeds dominate": ("binary", 1.0, 0.3),
    "0/1, problems dominate": ("binary", 0.05, 1.5),
}


def coverage(kind: str, sd_seed: float, sd_problem: float, seeds: int, problems: int, trials: int) -> float:
    rng = np.random.default_rng(0)
    if kind == "binary":
        draws = np.random.default_rng(1)
        truth = float(expit(logit(0.4) + draws.normal(0, sd_seed, 10**6) + draws.normal(0, sd_problem, 10**6)).mean())
    else:
        truth = 0.4
    covered = 0
    for _ in range(trials):
        u, v = rng.normal(0, sd_seed, (seeds, 1)), rng.normal(0, sd_problem, (1, problems))
        if kind == "binary":
            scores = (rng.random((seeds, problems)) < expit(logit(0.4) + u + v)).astype(float)
        else:
            scores = 0.4 + u + v + rng.normal(0, 0.3, (seeds, problems))
        r = seed_problem_interval(scores.tolist())
        covered += r["ci_low"] <= truth <= r["ci_high"]
    return covered / trials


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    print(f"| case ({trials} trials each) | 3 seeds x 150 problems | 5 seeds x 120 problems |\n|---|---|---|")
    for name, (kind, sd_seed, sd_problem) in CASES.items():
        cells = [f"{100 * coverage(kind, sd_seed, sd_problem, s, p, trials):.1f}%" for s, p in ((3, 150), (5, 120))]
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
