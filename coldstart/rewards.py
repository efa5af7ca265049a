"""Verifiable rewards for GRPO, by name, in TRL's reward-function form `f(prompts, completions, **columns)`.

- `accuracy`: 1 when math-verify finds the completion's final answer equal to the gold `answer`, else 0.
- `format`: 1 when the completion ends its answer in a non-empty `\\boxed{}`, else 0.
- `length`: a penalty in [-1, 0] for the share of `max_completion_length` the completion uses.

Each is safe against hostile completions: only the tail is read and checks have a time limit (`coldstart.grading`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from trl.rewards import get_soft_overlong_punishment

from coldstart import faults
from coldstart.grading import has_boxed_answer, is_correct


def completion_text(completion: Any) -> str:
    """The text of a completion, conversational (a list of messages) or plain."""
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    return completion if isinstance(completion, str) else ""


def accuracy(completions: list[Any], answer: list[str], timeout: float = 5.0, **kwargs: Any) -> list[float]:
    faults.reach("reward")
    return [float(is_correct(gold, completion_text(c), timeout)) for c, gold in zip(completions, answer)]


def boxed_format(completions: list[Any], **kwargs: Any) -> list[float]:
    return [float(has_boxed_answer(completion_text(c))) for c in completions]


def length_penalty(completions: list[Any], completion_ids: list[list[int]], max_length: int, **kwargs: Any) -> list[float]:
    """-length / max_length, -1 at the cap: TRL's DAPO soft overlong punishment with the whole length as its cache."""
    return get_soft_overlong_punishment(max_length, max_length)(completion_ids=completion_ids)


REWARDS: dict[str, Callable[..., list[float]]] = {
    "accuracy": accuracy,
    "format": boxed_format,
    "length": length_penalty,
}


def build_rewards(weights: dict[str, float], max_completion_length: int, timeout: float) -> tuple[list[Callable], list[float]]:
    """The reward functions and their weights, named as TRL logs them (`rewards/<name>/mean`)."""
    funcs = []
    for name in weights:  # names are checked when the config loads
        bound = {"accuracy": {"timeout": timeout}, "length": {"max_length": max_completion_length}}.get(name, {})
        func = functools.partial(REWARDS[name], **bound)
        func.__name__ = name
        funcs.append(func)
    return funcs, list(weights.values())
