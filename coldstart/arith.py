"""The built-in `arith` data: seeded multi-step integer word problems whose demonstrations come in deliberately
heterogeneous styles (concise, verbose, unusual notation, answer-only, and a share with a wrong step), each tagged
with its style. Train and test problems never overlap: a problem's split is a hash of the problem itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

from coldstart.config import ArithSection
from coldstart.errors import ColdstartError

BOXED_INSTRUCTION = "Give the final answer as \\boxed{N}."

_NAMES = ["Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Ines", "Tom", "Yuki", "Sara"]
_ITEMS = ["apples", "marbles", "stickers", "coins", "books", "shells", "stamps", "cards", "beads", "pencils"]
_TEST_SHARE = 20  # percent of the problem space that belongs to the held-out split


def _arith_problem(rng: random.Random, cfg: ArithSection) -> tuple[int, list[tuple[str, int]]]:
    steps = rng.randint(cfg.min_steps, cfg.max_steps)
    value = rng.randint(2, cfg.max_operand)
    start, ops = value, []
    for _ in range(steps):
        choices = ["add", "mul"] + (["sub"] if value > 1 else [])
        op = rng.choice(choices)
        if op == "mul" and value * 2 > 400:
            op = "add"
        if op == "add":
            k = rng.randint(1, cfg.max_operand)
            value += k
        elif op == "sub":
            k = rng.randint(1, min(cfg.max_operand, value - 1))
            value -= k
        else:
            k = rng.randint(2, max(2, min(4, 400 // value)))
            value *= k
        ops.append((op, k))
    return start, ops


def _apply(value: int, op: str, k: int) -> int:
    return value + k if op == "add" else value - k if op == "sub" else value * k


def _problem_split(start: int, ops: list[tuple[str, int]]) -> str:
    key = f"{start}|" + ";".join(f"{o}{k}" for o, k in ops)
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < _TEST_SHARE else "train"


def generate_arith_ood(cfg: ArithSection, num_samples: int, seed: int) -> list[dict[str, Any]]:
    """Held-out problems outside the training distribution of `cfg`: the starting amount and every added or taken
    amount above `cfg.max_operand` (up to three times it; multipliers stay 2-4, as trained) and sentences no
    training problem uses; the number of operations is the training range's."""
    ood = dataclasses.replace(cfg, max_operand=3 * cfg.max_operand)
    rng = random.Random(f"arith-ood-{seed}")
    samples, seen, attempts = [], set(), 0
    while len(samples) < num_samples:
        attempts += 1
        if attempts > 200 * num_samples + 10_000:
            raise ColdstartError(f"arith-ood: only {len(samples)} distinct problems found for {num_samples} asked; "
                                 "raise data.arith.max_operand or max_steps, or lower eval.num_problems")
        start, ops = _arith_problem(rng, ood)
        if start <= cfg.max_operand or any(op != "mul" and k <= cfg.max_operand for op, k in ops):
            continue
        key = f"{start}|{ops}"
        if key in seen:
            continue
        seen.add(key)
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        value = start
        for op, k in ops:
            value = _apply(value, op, k)
        samples.append({"id": f"arith-ood-{len(samples):05d}",
                        "prompt": [{"role": "user", "content": _question(name, item, start, ops, "ood")}],
                        "completion": [{"role": "assistant", "content": f"The answer is \\boxed{{{value}}}."}],
                        "answer": str(value), "style": "ood", "source": f"arith-ood-{len(ops)}step"})
    return samples


# the sentences of a problem: the training data's, and others no training problem uses (`arith-ood`)
_WORDING = {
    "train": {"start": "{name} has {start} {item}.", "add": "Then {name} gets {k} more {item}.",
              "sub": "Then {name} gives away {k} {item}.",
              "mul": "Then the number of {item} {name} has becomes {k} times as large.",
              "ask": "How many {item} does {name} have now?"},
    "ood": {"start": "At first there are {start} {item} in {name}'s box.", "add": "A friend puts {k} {item} into the box.",
            "sub": "{name} takes {k} {item} out of the box.",
            "mul": "The box then holds {k} times the {item} it held before.",
            "ask": "Count the {item} in the box at the end."},
}


def _question(name: str, item: str, start: int, ops: list[tuple[str, int]], wording: str = "train") -> str:
    w = _WORDING[wording]
    sentences = [w["start"].format(name=name, item=item, start=start)]
    sentences += [w[op].format(name=name, item=item, k=k) for op, k in ops]
    sentences.append(f"{w['ask'].format(name=name, item=item)} {BOXED_INSTRUCTION}")
    return " ".join(sentences)


_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


def _solution(style: str, name: str, item: str, start: int, ops: list[tuple[str, int]], values: list[int]) -> str:
    """Write the worked solution in `style`; `values[i]` is the running total after step i (values[0] = start)."""
    final = values[-1]
    if style == "answer_only":
        return f"\\boxed{{{final}}}"
    if style == "notation":
        rpn = " ".join([str(start)] + [f"{k} {_SYMBOL[op]}" for op, k in ops])
        return f"RPN ⟨{rpn}⟩ ⟹ {final} ∴ \\boxed{{{final}}}"
    if style == "verbose":
        lines = [f"Let's work through this carefully, one step at a time. At the start, {name} has {start} {item}."]
        for (op, k), before, after in zip(ops, values, values[1:]):
            verb = {"add": f"getting {k} more", "sub": f"giving away {k}", "mul": f"multiplying by {k}"}[op]
            lines.append(f"After {verb}, {name} has {before} {_SYMBOL[op]} {k} = {after} {item}.")
        lines.append(f"So at the end {name} has {final} {item}. The final answer is \\boxed{{{final}}}.")
        return " ".join(lines)
    lines = [f"{before} {_SYMBOL[op]} {k} = {after}" for (op, k), before, after in zip(ops, values, values[1:])]
    lines.append(f"The answer is \\boxed{{{final}}}.")
    return "\n".join(lines)


def generate_arith(cfg: ArithSection, split: str, num_samples: int, seed: int) -> list[dict[str, Any]]:
    """`num_samples` problems of `split` ('train' or 'test'); the two splits never share a problem."""
    if split not in ("train", "test"):
        raise ColdstartError(f"data: arith has splits 'train' and 'test', not {split!r}")
    rng = random.Random(f"arith-{seed}-{split}")
    styles = list(cfg.styles)
    weights = [cfg.styles[s] for s in styles]
    seen: set[str] = set()
    samples = []
    attempts = 0
    while len(samples) < num_samples:
        attempts += 1
        if attempts > 200 * num_samples + 10_000:
            raise ColdstartError(
                f"data.arith: only {len(samples)} distinct {split} problems found for {num_samples} asked; "
                "raise max_steps or max_operand"
            )
        start, ops = _arith_problem(rng, cfg)
        key = f"{start}|{ops}"
        if key in seen or _problem_split(start, ops) != split:
            continue
        seen.add(key)
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        values = [start]
        for op, k in ops:
            values.append(_apply(values[-1], op, k))
        answer = values[-1]
        if rng.random() < cfg.wrong_fraction:
            style = "wrong"
            wrong = list(values)
            at = rng.randrange(1, len(wrong))  # one step's result is off; the error carries to the end
            wrong[at] += rng.choice([-1, 1]) * rng.randint(1, 9)
            for i in range(at + 1, len(wrong)):
                wrong[i] = _apply(wrong[i - 1], *ops[i - 1])
            completion = _solution(rng.choice(["concise", "verbose"]), name, item, start, ops, wrong)
        else:
            style = rng.choices(styles, weights)[0]
            completion = _solution(style, name, item, start, ops, values)
        samples.append(
            {
                "id": f"arith-{split}-{len(samples):05d}",
                "prompt": [{"role": "user", "content": _question(name, item, start, ops)}],
                "completion": [{"role": "assistant", "content": completion}],
                "answer": str(answer),
                "style": style,
                "source": f"arith-{len(ops)}step",
            }
        )
    return samples
