"""What the handoff passes on to GRPO, chosen from rollouts of the warmed policy: the RL prompts that carry a
learning signal, and the warm-up checkpoint to start from. Pure functions of per-prompt correct counts.

A GRPO group of k completions whose rewards are all equal has no advantage, so its prompt spends generation and
compute for nothing. Its pass rate under the warmed policy (correct / k over k rollouts, the group GRPO will draw)
predicts that: a prompt all wrong or all right at k is likely to stay so for a while.
"""

from __future__ import annotations

import random
from typing import Any


def curate(correct: list[int], k: int, above: float, below: float, keep_rest: float, seed: int) -> list[str]:
    """Why each prompt is kept or dropped: 'informative' (above < correct/k < below), 'kept at random' (a
    `keep_rest` share of the others, seeded), or dropped as 'all wrong', 'all right' or 'outside the band'."""
    rng = random.Random(f"curate-{seed}")
    out = []
    for c in correct:
        rate = c / k
        if above < rate < below:
            out.append("informative")
        elif rng.random() < keep_rest:
            out.append("kept at random")
        else:
            out.append("all wrong" if c == 0 else "all right" if c == k else "outside the band")
    return out


KEPT = ("informative", "kept at random")


def curation_summary(correct: list[int], k: int, reasons: list[str]) -> dict[str, Any]:
    """The pool before and after: sizes, and the zero-variance share (all right or all wrong at k) of each."""
    kept = [c for c, r in zip(correct, reasons) if r in KEPT]
    return {
        "k": k,
        "pool": len(correct),
        "kept": len(kept),
        "by_reason": {r: reasons.count(r) for r in sorted(set(reasons))},
        "zero_variance_pool": sum(c in (0, k) for c in correct) / len(correct),
        "zero_variance_kept": sum(c in (0, k) for c in kept) / len(kept) if kept else None,
    }


def pick_checkpoint(candidates: list[dict[str, Any]]) -> int:
    """The candidate GRPO should start from: the highest pass@k (a prompt never solved in k tries gives GRPO
    nothing), then the lower zero-variance share, then the later step. Each candidate has `pass@k`,
    `zero_variance` and `step`."""
    return max(range(len(candidates)),
               key=lambda i: (candidates[i]["pass@k"], -candidates[i]["zero_variance"], candidates[i]["step"]))
