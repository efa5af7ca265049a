"""The mechanism behind CADFT's stability claim, measured at a fixed policy: does a sample's gradient grow as its
compatibility falls (the paper's assumption), and does CADFT's update then vary less than DFT's?

For each sample of K minibatches of B demonstrations (after a batched forward per minibatch, without gradients,
for the NLL statistics that set the weights), a forward and two backward passes of its own give its gradient under
the SFT term `-sum_t l_t` and the DFT term `-sum_t sg(p_t) l_t`, each divided by the minibatch's mean completion
length, so that a minibatch's update under TRL's token normalisation is the mean of its samples' gradients. CADFT's
sample gradient is its weight times the DFT one (the weight carries no gradient), the weight from the minibatch's
own NLL statistics (`cadft.stats: batch`, with the run's beta, gate and floor). Four updates are measured per
minibatch: sft, dft, cadft (divided by the tokens, as trained by default) and cadft-weights (divided by the sum of
weight x tokens: DFT's step size, the control for it). Nothing of size B x parameters is kept: per-sample gradient
norms, and per loss the minibatch update and a running sum of them (`noise_statistics` turns those into the
gradient noise).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from coldstart.compatibility import pad_batch, sequence_nll, token_logprobs, tokenize_sample
from coldstart.config import CadftSection
from coldstart.errors import ColdstartError
from coldstart.losses import batch_moments, cadft_weights, mean_std

LOSSES = ("sft", "dft", "cadft", "cadft-weights")


def noise_statistics(sq_norms: list[float], mean_sq_norm: float, batch_size: int) -> dict[str, float | None]:
    """From K minibatch updates G_k of B samples each (their squared norms, and the squared norm of their mean):
    the mean squared update, the trace of the minibatch update's covariance (unbiased, over K - 1), the squared
    norm of the true mean gradient (unbiased: |mean G_k|^2 less the covariance's trace over K), and the gradient
    noise scale B * tr(cov) / |G|^2 (McCandlish et al.'s simple noise scale; None when |G|^2 is not above 0)."""
    k = len(sq_norms)
    mean_sq = sum(sq_norms) / k
    trace = k / (k - 1) * (mean_sq - mean_sq_norm) if k > 1 else float("nan")
    signal = mean_sq_norm - trace / k if k > 1 else float("nan")
    scale = batch_size * trace / signal if k > 1 and signal > 0 else None
    return {"mean_sq_update": mean_sq, "trace_cov": trace, "sq_mean_gradient": signal, "noise_scale": scale}


def _sq(vectors: list[torch.Tensor]) -> float:
    return float(sum((v.double() ** 2).sum() for v in vectors))


def measure(model, tokenizer, samples: list[dict[str, Any]], batch_size: int, cadft: CadftSection | None = None,
            max_length: int | None = None, fused: bool = False, progress: bool = True) -> dict[str, Any]:
    """Per-sample gradient norms (sft, dft; cadft's is its weight times the gradient of its token term, dft's or,
    with `token_weighting: none`, sft's) and each loss's minibatch update statistics over
    `len(samples) // batch_size` minibatches taken in order. `samples`: prompt/completion rows (extra fields such
    as `id` and `style` are carried into the per-sample records). Sums are kept in fp32."""
    from tqdm.auto import tqdm

    c = cadft or CadftSection()
    k = len(samples) // batch_size
    if k < 1:
        raise ColdstartError(f"mechanism: {len(samples)} demonstrations do not make one minibatch of {batch_size}")
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()  # dropout off: the gradient of the policy as it is
    sums = {loss: [torch.zeros_like(p, dtype=torch.float32) for p in params] for loss in LOSSES}
    sq_norms: dict[str, list[float]] = {loss: [] for loss in LOSSES}
    records = []
    try:
        for b in tqdm(range(k), desc="gradients", unit="minibatch", disable=not progress):
            chunk = samples[b * batch_size:(b + 1) * batch_size]
            rows = [tokenize_sample(tokenizer, s["prompt"], s["completion"], max_length) for s in chunk]
            with torch.no_grad():
                log_probs, mask = _logprobs(model, tokenizer, rows, fused)
                nll, tokens = sequence_nll(log_probs.float(), mask)
            weights = cadft_weights(nll, *mean_std(batch_moments(nll)), c.beta, c.gate_min, c.weight_floor)
            mean_tokens = float(tokens.float().mean())
            updates = {loss: [torch.zeros_like(p, dtype=torch.float32) for p in params] for loss in LOSSES}
            weighted_tokens = float((weights * tokens).sum())
            for i, row in enumerate(rows):
                lp, m = _logprobs(model, tokenizer, [row], fused)
                lp, m = lp[0], m[0]
                sft = -(lp * m).sum() / mean_tokens
                dft = -(lp * m * lp.detach().exp()).sum() / mean_tokens
                g_sft = torch.autograd.grad(sft, params, retain_graph=True, allow_unused=True)
                g_dft = torch.autograd.grad(dft, params, allow_unused=True)
                g_sft = [torch.zeros_like(p, dtype=torch.float32) if g is None else g.float() for g, p in zip(g_sft, params)]
                g_dft = [torch.zeros_like(p, dtype=torch.float32) if g is None else g.float() for g, p in zip(g_dft, params)]
                g_own = g_dft if c.token_weighting == "dft" else g_sft  # the term CADFT weighs
                w = float(weights[i])
                torch._foreach_add_(updates["sft"], g_sft, alpha=1 / len(rows))
                torch._foreach_add_(updates["dft"], g_dft, alpha=1 / len(rows))
                torch._foreach_add_(updates["cadft"], g_own, alpha=w / len(rows))
                # divided by the sum of weight x tokens instead of the tokens: sum_i w_i raw_i / sum_i w_i T_i
                torch._foreach_add_(updates["cadft-weights"], g_own, alpha=w * mean_tokens / max(weighted_tokens, 1e-12))
                norm_sft, norm_dft = math.sqrt(_sq(g_sft)), math.sqrt(_sq(g_dft))
                records.append({**{f: chunk[i][f] for f in ("id", "style") if f in chunk[i]}, "minibatch": b,
                                "nll": float(nll[i]), "compatibility": math.exp(-float(nll[i])),
                                "tokens": int(tokens[i]), "weight": w, "norm_sft": norm_sft, "norm_dft": norm_dft,
                                "norm_cadft": w * (norm_dft if c.token_weighting == "dft" else norm_sft)})
            for loss in LOSSES:
                sq_norms[loss].append(_sq(updates[loss]))
                torch._foreach_add_(sums[loss], updates[loss])
    finally:
        model.train(was_training)
    updates_stats = {loss: noise_statistics(sq_norms[loss], _sq([s / k for s in sums[loss]]), batch_size)
                     for loss in LOSSES}
    return {"minibatches": k, "batch_size": batch_size, "beta": c.beta, "samples": records, "losses": updates_stats}


def _logprobs(model, tokenizer, rows: list[dict[str, list[int]]], fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    batch = pad_batch(rows, tokenizer.pad_token_id, device)
    return token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], fused)


def by_decile(records: list[dict[str, Any]], key: str) -> list[dict[str, float]]:
    """Mean `key` per compatibility decile, from the least compatible tenth of the samples to the most."""
    ordered = sorted(records, key=lambda r: r["compatibility"])
    n = len(ordered)
    out = []
    for d in range(10):
        part = ordered[d * n // 10:(d + 1) * n // 10]
        if part:
            out.append({"decile": d + 1, "compatibility": sum(r["compatibility"] for r in part) / len(part),
                        "value": sum(r[key] for r in part) / len(part), "samples": len(part)})
    return out


def norm_deciles(records: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """`by_decile` of each per-sample gradient norm the records keep (sft, dft, cadft; `cadft-weights` differs
    from cadft only by a minibatch's normaliser, so it has no per-sample norm of its own)."""
    return {loss: by_decile(records, f"norm_{loss}") for loss in ("sft", "dft", "cadft")}


def assumption(records: Iterable[dict[str, Any]], key: str = "norm_dft") -> dict[str, Any]:
    """Whether the least compatible samples carry the largest gradients: Spearman's rank correlation of the NLL
    with the gradient norm, and the least compatible decile's mean norm against the rest's. The norms are of each
    sample's contribution to the update (summed over its tokens), so longer demonstrations weigh more; `rho_tokens`
    is the correlation of the NLL with the token count, to read it by. `holds` only when the
    correlation is positive with p < 0.05 (a permutation p-value: `statistics.spearman`) and that decile's mean is
    the largest of the deciles; `fails` when the correlation is negative with p < 0.05; otherwise neither is shown.
    A rho is None where either side has no spread (`rho_tokens` when every sample has as many tokens)."""
    from coldstart.statistics import spearman

    records = list(records)
    nll = [x["nll"] for x in records]
    r = spearman(nll, [x[key] for x in records])
    deciles = by_decile(records, key)
    least = deciles[0]["value"]
    largest = max(d["value"] for d in deciles)
    rho, p = r["rho"], r["p"]
    holds = rho is not None and rho > 0 and p < 0.05 and least >= largest
    tokens = [x.get("tokens", 0) for x in records]
    lengths = spearman(nll, tokens)["rho"]
    return {"rho": rho, "p": p, "rho_tokens": lengths, "least_compatible_decile": least, "largest_decile": largest,
            "verdict": "holds" if holds else "fails" if rho is not None and rho < 0 and p < 0.05 else "not shown",
            "deciles": deciles}
