"""What `warmup.max_length` does to the demonstrations, the one rule the score, warm-up and handoff stages apply.

A sample longer than `max_length` tokens is dropped, refused or truncated (`warmup.too_long`). Whatever the policy,
a sample whose completion starts at or after the cut has no completion token left: it would be scored with NLL 0
(compatibility 1.0) and trained on with an empty loss, so it never goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from coldstart.compatibility import tokenize_sample
from coldstart.errors import ColdstartError


@dataclass(frozen=True)
class SampleLength:
    """A tokenized demonstration's length, and where its completion (the first label) starts."""

    tokens: int
    completion_start: int

    def completion_tokens(self, max_length: int) -> int:
        """Completion tokens left when the sample is cut to `max_length`."""
        return max(0, min(self.tokens, max_length) - self.completion_start)


def sample_lengths(tokenizer, samples: Iterable[dict[str, Any]]) -> list[SampleLength]:
    out = []
    for s in samples:
        row = tokenize_sample(tokenizer, s["prompt"], s["completion"], None)
        start = next((t for t, label in enumerate(row["labels"]) if label != -100), len(row["labels"]))
        out.append(SampleLength(len(row["input_ids"]), start))
    return out


def length_policy(lengths: list[SampleLength], max_length: int, policy: str) -> tuple[list[int], list[int], list[int]]:
    """`(keep, too_long, empty)` sample positions: what goes on, what is longer than `max_length`, and what would
    keep no completion token. Dropping removes both kinds; truncating removes the empty ones only."""
    too_long = [i for i, n in enumerate(lengths) if n.tokens > max_length]
    empty = [i for i, n in enumerate(lengths) if n.completion_tokens(max_length) == 0]
    dropped = set(empty) | (set(too_long) if policy != "truncate" else set())
    return [i for i in range(len(lengths)) if i not in dropped], too_long, empty


def apply_length_policy(train, tokenizer, max_length: int, policy: str):
    """The samples that go on under `warmup.too_long` and how many were dropped; raises for 'error', and when
    nothing is left."""
    keep, too_long, empty = length_policy(sample_lengths(tokenizer, train), max_length, policy)
    if too_long and policy == "error":
        raise ColdstartError(
            f"sample {train[too_long[0]]['id']!r}: longer than warmup.max_length={max_length} tokens "
            f"({len(too_long)} such samples); raise max_length or set warmup.too_long: drop"
        )
    if not keep:
        raise ColdstartError(
            f"warmup.max_length={max_length}: no training sample keeps a completion token within it; raise max_length"
        )
    dropped = len(train) - len(keep)
    return (train.select(keep) if dropped else train), dropped
