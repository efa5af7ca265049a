"""Greedy grading against avg@k, on the same problems: which gives a comparison of two starts' RL gains the smaller
standard error over problems (the study's grading noise, before any seed's).

Each argument is a `coldstart eval --model ... --set eval.num_samples=K --out DIR` folder (its records carry the
greedy grade and the count of K samples graded correct), in the order: start A warmed, A after GRPO, start B warmed,
B after GRPO. Per problem, the difference of RL gains (A's minus B's) is taken under each grading; its mean and its
standard error over problems are printed, with each model's accuracy and standard error.

    python scripts/grading_noise.py A-warmed A-rl B-warmed B-rl
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from coldstart.runs import read_jsonl


def scores(folder: Path) -> dict[str, tuple[float, float]]:
    """Per problem id: (greedy grade, share of the k samples graded correct)."""
    return {r["id"]: (float(r["correct"]), r["samples_correct"] / r["num_samples"])
            for r in read_jsonl(folder / "records.jsonl")}


def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def main(folders: list[str]) -> None:
    if len(folders) != 4:
        sys.exit(__doc__)
    models = [scores(Path(f)) for f in folders]
    ids = sorted(set.intersection(*(set(m) for m in models)))
    k = read_jsonl(Path(folders[0]) / "records.jsonl")[0]["num_samples"]
    print(f"{len(ids)} problems, k = {k}")
    for which, label in ((0, "greedy"), (1, f"avg@{k}")):
        per_model = [[m[i][which] for i in ids] for m in models]
        for folder, values in zip(folders, per_model):
            mean, se = mean_se(values)
            print(f"{label:>8} {folder}: {100 * mean:.1f}% (SE {100 * se:.1f})")
        difference = [(a1 - a0) - (b1 - b0) for a0, a1, b0, b1 in zip(*per_model)]
        mean, se = mean_se(difference)
        print(f"{label:>8} RL gain, A - B: {100 * mean:+.1f} points (SE {100 * se:.1f} over problems)")


if __name__ == "__main__":
    main(sys.argv[1:])
