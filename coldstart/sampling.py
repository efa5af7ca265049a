"""The warm-up's data order, known in advance: which samples each optimizer step trains on, and when rewriting
rounds come.

Rewriting is only worth making for a sample that training will draw again, so the rewriter asks, at a round, which
samples the rest of training visits. `EpochOrder` draws a new random permutation each epoch from `seed + epoch`
(as accelerate's seedable sampler does), and `VisitPlan` lays those permutations out into optimizer steps the way
Trainer and accelerate batch them: micro-batches of `batch_size` per process, dealt to the processes in turn (the
last one topped up from the epoch's start when there are several processes, or dropped with `drop_last`),
`accumulation` micro-batches per step (fewer for an epoch's last step).
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch.utils.data import Sampler


def epoch_permutation(size: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


class EpochOrder(Sampler[int]):
    """A random order per epoch that a `VisitPlan` can predict (Trainer calls `set_epoch` before each epoch)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(epoch_permutation(self.size, self.seed, self.epoch))

    def __len__(self) -> int:
        return self.size


class VisitPlan:
    """Which dataset rows (positions in the trainer's train dataset) each optimizer step of a run trains on."""

    def __init__(self, size: int, seed: int, batch_size: int, processes: int, accumulation: int,
                 drop_last: bool = False):
        self.size, self.seed = size, seed
        self.micro = batch_size * processes  # rows per round of micro-batches over all processes
        self.accumulation = accumulation
        self.processes = processes
        self.drop_last = drop_last
        micro_batches = size // self.micro if drop_last else math.ceil(size / self.micro)
        self.steps_per_epoch = math.ceil(micro_batches / accumulation)
        self._orders: dict[int, list[int]] = {}

    def rows(self, step: int) -> list[int]:
        """The rows optimizer step `step` (1-based, as `state.global_step` counts) trains on."""
        epoch, within = divmod(step - 1, self.steps_per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: epoch_permutation(self.size, self.seed, epoch)}  # steps are asked for in order
        order = list(self._orders[epoch])
        if self.drop_last:  # the incomplete last round of micro-batches is never drawn
            order = order[: len(order) - len(order) % self.micro]
        elif self.processes > 1 and len(order) % self.micro:  # accelerate's even_batches: wrap to full batches
            order += order[: self.micro - len(order) % self.micro]
        span = self.micro * self.accumulation
        return order[within * span: (within + 1) * span]

    def visits_after(self, step: int, total_steps: int) -> Counter:
        """How many times each row is trained on in the steps after `step`, up to `total_steps`."""
        visits: Counter = Counter()
        for later in range(step + 1, total_steps + 1):
            visits.update(self.rows(later))
        return visits


def resolve_steps(value: float, total_steps: int) -> int:
    """A step count given as steps (>= 1) or as a fraction of training (< 1); at least 1."""
    return max(1, int(value) if value >= 1 else math.ceil(value * total_steps))


def is_due(step: int, start: int, every: int) -> bool:
    return step >= start and (step - start) % every == 0


def is_round(step: int, start: float, every: float, total_steps: int) -> bool:
    """Whether a rewriting round runs after `step`: never after the last step, since nothing trains after it."""
    return step < total_steps and is_due(step, resolve_steps(start, total_steps), resolve_steps(every, total_steps))


def round_steps(start: float, every: float, total_steps: int) -> list[int]:
    """The steps after which a rewriting round runs."""
    return [s for s in range(1, total_steps) if is_round(s, start, every, total_steps)]


def schedule_problem(start: float, every: float, total_steps: int) -> str | None:
    """Why a rewriting schedule has no round within a run of `total_steps`, or None when it has one."""
    if round_steps(start, every, total_steps):
        return None
    return (
        f"the first rewriting round would come after step {resolve_steps(start, total_steps)}, but the warm-up has "
        f"{total_steps} steps and nothing trains on a rewrite made at or after its last step; give "
        "warmup.rewrite.start and warmup.rewrite.every as fractions of training (e.g. 0.5 and 0.25), or set "
        "warmup.rewrite.enabled: false"
    )
