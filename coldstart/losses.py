"""The warm-up losses and CADFT's sample weights, as pure functions of per-token log-probs.

| loss    | per-sample term                 |
|---------|---------------------------------|
| sft     | -sum_t l_t                      |
| dft     | -sum_t sg(p_t) l_t              |
| cadft   | -w_i sum_t sg(p_t) l_t          |
| asft    | sum_t (-sg(p_t) l_t + a KL_t)   |

(`KL_t` = KL(base || policy) over the vocabulary at token t, `a` the anchor weight.)

All divide by the number of completion tokens in the global batch (every process and accumulation step), as TRL
does with `num_items_in_batch`, so `beta = 0` is exactly TRL's DFT; CADFT's `normalize: samples` instead divides
each sample's term by its own tokens and the sum by the number of samples.
"""

from __future__ import annotations

import torch

EPS = 1e-6


def batch_moments(nll: torch.Tensor) -> torch.Tensor:
    """(count, sum, sum of squares) of per-sample NLLs: what is all-reduced across processes and micro-batches."""
    nll = nll.detach().double()
    return torch.stack([torch.tensor(float(nll.numel()), dtype=torch.float64, device=nll.device), nll.sum(), (nll**2).sum()])


def mean_std(moments: torch.Tensor) -> tuple[float, float]:
    """Mean and population standard deviation from `batch_moments` (summed over every part of the batch)."""
    count, total, squares = moments.tolist()
    mean = total / count
    return mean, max(squares / count - mean * mean, 0.0) ** 0.5


def cadft_weights(
    nll: torch.Tensor,
    mean: float,
    std: float,
    beta: float,
    gate_min: float | None = None,
    weight_floor: float = 0.0,
) -> torch.Tensor:
    """`w_i = exp(-beta * max(0, z_i))`, `z_i = (n_i - mean) / (std + 1e-6)`; no gradient flows through it.

    Samples at least as compatible as the batch keep weight 1, less compatible ones are damped smoothly.
    `weight_floor` bounds the damping from below; `gate_min` zeroes samples whose compatibility `exp(-n_i)` is
    below it.
    """
    nll = nll.detach()
    z = (nll - mean) / (std + EPS)
    weights = torch.exp(-beta * z.clamp(min=0))
    if weight_floor > 0:
        weights = weights.clamp(min=weight_floor)
    if gate_min is not None:
        weights = torch.where(torch.exp(-nll) < gate_min, torch.zeros_like(weights), weights)
    return weights


def token_loss(
    log_probs: torch.Tensor,
    mask: torch.Tensor,
    num_items: torch.Tensor | int,
    token_weighting: str = "dft",
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """`-sum_i w_i sum_t v_t l_t / num_items`, with `v_t = sg(p_t)` for `dft` and 1 for `none` (plain NLL).

    `num_items` is the global count of completion tokens (or of samples, with each sample's weight divided by its
    own tokens); a batch without any gives a finite zero.
    """
    per_token = -log_probs * mask
    if token_weighting == "dft":
        per_token = per_token * log_probs.detach().exp()
    per_sample = per_token.sum(-1)
    if sample_weights is not None:
        per_sample = per_sample * sample_weights.to(per_sample.dtype)
    return per_sample.sum() / torch.as_tensor(num_items, device=per_sample.device, dtype=per_sample.dtype).clamp(min=EPS)


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = `sum_v p(v) (log p(v) - log q(v))` at each position, from full-vocabulary log-probs
    `(..., vocab)`."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def anchor_kl(log_probs: torch.Tensor, base_log_probs: torch.Tensor) -> torch.Tensor:
    """ASFT's anchor, KL(base || policy) at each position, differentiable in the policy's log-probs only."""
    return kl_divergence(base_log_probs.detach(), log_probs)


def asft_loss(log_probs: torch.Tensor, kl: torch.Tensor, num_items: torch.Tensor | int, anchor: float) -> torch.Tensor:
    """`(-sum_t sg(p_t) l_t + anchor * sum_t KL_t) / num_items`, with one log-prob and one `anchor_kl` per
    demonstration token: DFT's term (`token_loss`) plus ASFT's anchor, under the same count."""
    count = torch.as_tensor(num_items, device=kl.device, dtype=kl.dtype).clamp(min=EPS)
    return token_loss(log_probs, torch.ones_like(log_probs), num_items, "dft") + anchor * kl.sum() / count


def effective_sample_fraction(weights: torch.Tensor) -> float:
    """`(sum w)^2 / sum w^2` over the batch size: 1 when all weights are equal, small when few samples dominate."""
    squares = float((weights**2).sum())
    return float(weights.sum()) ** 2 / squares / weights.numel() if squares > 0 else 0.0
