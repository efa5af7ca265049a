"""Exploration-matched sampling for GRPO (`rl.temperature: auto`): the temperature at which the warmed policy's
groups of rollouts carry a learning signal.

GRPO learns only from groups whose completions are neither all right nor all wrong. A warm-up that sharpens the
policy (DFT's does) leaves most groups all right or all wrong at temperature 1, so comparing starts at one
temperature compares how much each leaves GRPO to learn from as much as how good a start each is. Here the
handoff rolls the warmed policy out at a few temperatures on RL prompts and picks the lowest one whose share of
mixed groups reaches a target, so that each start explores alike.
"""

from __future__ import annotations

from typing import Any, Callable


def group_signal(correct_per_prompt: list[int], k: int) -> dict[str, float]:
    """Of groups of `k` rollouts with these correct counts: the share that is mixed (0 < correct < k: GRPO has an
    advantage to learn from) and the mean Bernoulli variance p (1 - p) of their pass rates."""
    rates = [c / k for c in correct_per_prompt]
    return {"mixed_share": sum(0 < c < k for c in correct_per_prompt) / len(correct_per_prompt),
            "bernoulli_variance": sum(p * (1 - p) for p in rates) / len(rates)}


def choose_temperature(curve: list[dict[str, Any]], target: float) -> tuple[float, str]:
    """The lowest temperature of `curve` (rows of `temperature` and `mixed_share`) whose mixed share reaches
    `target` (sampling hotter than needed only adds noise), with why; where none reaches it, the one with the
    largest share (the lowest of those tied)."""
    rows = sorted(curve, key=lambda r: r["temperature"])
    for r in rows:
        if r["mixed_share"] >= target:
            return r["temperature"], f"the lowest temperature whose mixed share reaches {target:.0%}"
    best = max(rows, key=lambda r: (r["mixed_share"], -r["temperature"]))
    return best["temperature"], f"no temperature reaches {target:.0%}: the one with the most mixed groups"


def calibrate(correct_at: Callable[[float], list[int]], temperatures: list[float], k: int,
              target: float) -> dict[str, Any]:
    """`correct_at(temperature)`: each prompt's correct count out of `k` rollouts at that temperature. The curve of
    `group_signal` over `temperatures`, the temperature chosen for GRPO (`choose_temperature`) and why."""
    curve = [{"temperature": t, **group_signal(correct_at(t), k)} for t in sorted(temperatures)]
    chosen, reason = choose_temperature(curve, target)
    return {"curve": curve, "target": target, "chosen": chosen, "reason": reason}
