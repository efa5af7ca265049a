"""Dynamic sampling (DAPO): GRPO groups whose rewards do not vary give no advantage, so they are dropped and the
batch is refilled with groups of new prompts. What the RL trainer needs for it, apart from TRL: which groups are
constant, the order refill prompts are drawn in (resumable), how many to draw, which groups to keep, and how the
kept rows of several generation rounds join into one batch."""

from __future__ import annotations

import math

import torch
from trl.trainer.utils import pad

# how a batch's tensors are padded when rows of several generation rounds join: (side, value); None: the tokenizer's
# pad token. Keys not listed are refused: dynamic sampling joins text batches only.
PADDING = {
    "prompt_ids": ("left", None), "prompt_mask": ("left", 0),
    "completion_ids": ("right", None), "completion_mask": ("right", 0),
    "old_per_token_logps": ("right", 0), "ref_per_token_logps": ("right", 0),
    "sampling_per_token_logps": ("right", 0), "importance_sampling_ratio": ("right", 1), "tool_mask": ("right", 1),
}
TOLERANCE = 1e-6  # a group whose rewards differ by at most this is constant (float32 sums such as 1 + 0.2 differ by ~1e-7)


def weighted_rewards(rewards, weights) -> torch.Tensor:
    """Each completion's reward as TRL weighs it, from its reward functions' values `(completions, functions)`: the
    weighted sum, a function's NaN (it did not score the completion) left out, NaN where none scored it."""
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    total = (rewards * torch.as_tensor(weights, dtype=torch.float64, device=rewards.device)).nansum(dim=1)
    total[torch.isnan(rewards).all(dim=1)] = torch.nan
    return total


def constant_groups(rewards: list[float] | torch.Tensor, k: int) -> list[bool]:
    """For consecutive groups of `k` rewards (TRL's order), whether each is constant: its rewards differ by at most
    `TOLERANCE`, NaNs (unscorable completions) left out; a group with none scorable is constant."""
    values = torch.as_tensor(rewards, dtype=torch.float64).view(-1, k)
    out = []
    for group in values:
        scored = group[~torch.isnan(group)]
        out.append(scored.numel() == 0 or (scored.max() - scored.min()).item() <= TOLERANCE)
    return out


def groups_to_draw(short: int, varying_share: float, cap: int) -> int:
    """Groups one refill round draws on each process: the largest shortfall over the processes divided by the share
    of groups that varied so far this step (so one round is expected to fill it), at least the shortfall, at most
    `cap` (a whole generation batch)."""
    return min(cap, max(short, math.ceil(short / max(varying_share, 1 / cap))))


def pick(constant: list[bool], needed: int) -> list[int]:
    """The groups a batch of `needed` trains on, in draw order: the first `needed` that vary, and when too few
    varied, the first constant ones after them to fill it (their advantage is 0)."""
    varying = [i for i, c in enumerate(constant) if not c]
    rest = [i for i, c in enumerate(constant) if c]
    return sorted((varying + rest)[:needed])


def join(batches: list[dict], rows: list[tuple[int, int]], pad_token_id: int,
         pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """One batch from rows (batch index, row index) of TRL's scored generation batches, re-padded to a common width
    (prompts on the left, completions on the right, as TRL pads) and the prompts' left padding that every row
    shares cut. A row from a narrower batch gains left padding, which shifts its positions; with rotary positions
    that changes its log-probs only by float rounding, so the old log-probs computed with its round still hold.
    `num_items_in_batch` is left to the caller: it counts the loss tokens over every process."""
    out = {}
    for key, value in batches[0].items():
        if key == "num_items_in_batch":
            continue
        picked = [batches[b][key][r] for b, r in rows]
        if value.dim() == 1:
            out[key] = torch.stack(picked)
            continue
        if key not in PADDING:
            raise ValueError(f"dynamic sampling joins text batches only; it cannot join {key!r}")
        side, fill = PADDING[key]
        out[key] = pad(picked, padding_value=pad_token_id if fill is None else fill, padding_side=side,
                       pad_to_multiple_of=pad_to_multiple_of)
    if "prompt_mask" in out and not pad_to_multiple_of:
        shared = int((out["prompt_mask"].cumsum(dim=1) == 0).all(dim=0).sum())
        out["prompt_ids"], out["prompt_mask"] = out["prompt_ids"][:, shared:], out["prompt_mask"][:, shared:]
    return out


class PromptStream:
    """The order refill prompts are drawn in: the dataset's rows shuffled with `seed` for each pass, passes one
    after another, the same on every process. `drawn` is the state a checkpoint keeps, so a resumed run draws on
    where the interrupted one stopped."""

    def __init__(self, size: int, seed: int, drawn: int = 0):
        self.size, self.seed, self.drawn = size, seed, drawn

    def take(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            epoch, at = divmod(self.drawn, self.size)
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
            part = order[at: at + n - len(out)]
            out += part
            self.drawn += len(part)
        return out
