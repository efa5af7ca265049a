"""The mechanism behind CADFT's stability claim, measured at a fixed policy: does a sample's gradient grow as its
compatibility falls (the paper's assumption), and does CADFT's update then vary less than DFT's?

For each sample of K minibatches of B demonstrations (after a batched forward per minibatch, without gradients,
for the NLL statistics that set the weights), a forward and backward pass of its own give its gradient under the
SFT term `-sum_t l_t`, another under the DFT term `-sum_t sg(p_t) l_t`, and a third under the term CADFT weighs,
each divided by the minibatch's mean completion length, so that a minibatch's update under TRL's token
normalisation is the mean of its samples' gradients. One gradient at a time (`PASSES`): a 7B model's parameters
fit a few times on a GPU, not ten. CADFT's sample gradient is its weight times the DFT one (the weight carries no
gradient), the weight from the minibatch's own NLL statistics (`cadft.stats: batch`, with the run's beta, gate
and floor). Four updates are measured per
minibatch: sft, dft, cadft (divided by the tokens, as trained by default) and cadft-weights (divided by the sum of
weight x tokens: DFT's step size, the control for it). Nothing of size B x parameters is kept: per-sample gradient
norms, and per loss the minibatch updates' squared norms and their running sum (`noise_statistics` turns those into
the gradient noise).
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
    """The squared norm of a list of tensors taken as one vector (per-tensor norms: no copy of the tensors)."""
    return float(sum(float(torch.linalg.vector_norm(v, dtype=torch.float32)) ** 2 for v in vectors))


# The gradient passes: which per-sample gradient each takes, and the updates it builds from it. Losses that share
# a per-sample gradient share a pass (cadft and cadft-weights weigh the same term and differ by a minibatch's
# normaliser); a pass holds the gradient, one minibatch update and a running sum per update, at most 4 copies.
PASSES = (("sft", ("sft",)), ("dft", ("dft",)), ("own", ("cadft", "cadft-weights")))


def measure(model, tokenizer, samples: list[dict[str, Any]], batch_size: int, cadft: CadftSection | None = None,
            max_length: int | None = None, fused: bool = False, progress: bool = True) -> dict[str, Any]:
    """Per-sample gradient norms (sft, dft; cadft's is its weight times the gradient of its token term, dft's or,
    with `token_weighting: none`, sft's) and each loss's minibatch update statistics over
    `len(samples) // batch_size` minibatches taken in order. `samples`: prompt/completion rows (extra fields such
    as `id` and `style` are carried into the per-sample records). Sums are kept in fp32 (a bf16 model's buffers are
    then twice its size each).

    Memory: beyond the model, at most 4 parameter-sized buffers at once (one pass per gradient, `PASSES`), at the
    cost of a forward per sample per pass; tied input and output embeddings add, for a moment, two more of the
    shared matrix while autograd sums its two gradients."""
    from tqdm.auto import tqdm

    c = cadft or CadftSection()
    k = len(samples) // batch_size
    if k < 1:
        raise ColdstartError(f"mechanism: {len(samples)} demonstrations do not make one minibatch of {batch_size}")
    params = [p for p in model.parameters() if p.requires_grad]
    minibatches = [samples[b * batch_size:(b + 1) * batch_size] for b in range(k)]
    rows = [[tokenize_sample(tokenizer, s["prompt"], s["completion"], max_length) for s in chunk] for chunk in minibatches]
    was_training = model.training
    model.eval()  # dropout off: the gradient of the policy as it is
    try:
        stats = []  # per minibatch: each sample's NLL, tokens and weight, from one batched forward without gradients
        for chunk in rows:
            with torch.no_grad():
                log_probs, mask = _logprobs(model, tokenizer, chunk, fused)
                nll, tokens = sequence_nll(log_probs.float(), mask)
            weights = cadft_weights(nll, *mean_std(batch_moments(nll)), c.beta, c.gate_min, c.weight_floor)
            stats.append((nll, tokens, weights))
        own = "dft" if c.token_weighting == "dft" else "sft"
        norms: dict[str, list[list[float]]] = {}
        updates_stats = {}
        bar = tqdm(total=k * len(PASSES), desc="gradients", unit="minibatch", disable=not progress)
        for term, losses in PASSES:
            sums = {loss: [torch.zeros_like(p, dtype=torch.float32) for p in params] for loss in losses}
            sq_norms: dict[str, list[float]] = {loss: [] for loss in losses}
            norms[term] = []
            for chunk, (nll, tokens, weights) in zip(rows, stats):
                mean_tokens = float(tokens.float().mean())
                update = [torch.zeros_like(p, dtype=torch.float32) for p in params]  # sum_i coefficient_i x gradient_i
                chunk_norms = []
                for i, row in enumerate(chunk):
                    lp, m = _logprobs(model, tokenizer, [row], fused)
                    lp, m = lp[0], m[0]
                    token_weight = lp.detach().exp() if (own if term == "own" else term) == "dft" else 1.0
                    grads = torch.autograd.grad(-(lp * m * token_weight).sum() / mean_tokens, params, allow_unused=True)
                    grads = [torch.zeros_like(p, dtype=torch.float32) if g is None else g.float()
                             for g, p in zip(grads, params)]
                    chunk_norms.append(math.sqrt(_sq(grads)))
                    coefficient = float(weights[i]) if term == "own" else 1.0
                    torch._foreach_add_(update, grads, alpha=coefficient / len(chunk))
                    del grads
                norms[term].append(chunk_norms)
                # cadft divides by the tokens (the update as built); cadft-weights by the sum of weight x tokens:
                # sum_i w_i raw_i / sum_i w_i T_i, the same update rescaled
                scale = {"cadft-weights": mean_tokens * len(chunk) / max(float((weights * tokens).sum()), 1e-12)}
                for loss in losses:
                    sq_norms[loss].append(scale.get(loss, 1.0) ** 2 * _sq(update))
                    torch._foreach_add_(sums[loss], update, alpha=scale.get(loss, 1.0))
                del update
                bar.update()
            for loss in losses:
                updates_stats[loss] = noise_statistics(sq_norms[loss], _sq([s / k for s in sums[loss]]), batch_size)
            del sums
        bar.close()
    finally:
        model.train(was_training)
    records = []
    for b, (chunk, (nll, tokens, weights)) in enumerate(zip(minibatches, stats)):
        for i, sample in enumerate(chunk):
            w = float(weights[i])
            norm_sft, norm_dft = norms["sft"][b][i], norms["dft"][b][i]
            records.append({**{f: sample[f] for f in ("id", "style") if f in sample}, "minibatch": b,
                            "nll": float(nll[i]), "compatibility": math.exp(-float(nll[i])),
                            "tokens": int(tokens[i]), "weight": w, "norm_sft": norm_sft, "norm_dft": norm_dft,
                            "norm_cadft": w * (norm_dft if own == "dft" else norm_sft)})
    updates_stats = {loss: updates_stats[loss] for loss in LOSSES}
    return {"minibatches": k, "batch_size": batch_size, "beta": c.beta, "weighed_term": own, "samples": records,
            "losses": updates_stats}


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


def weighting_nulls(records: list[dict[str, Any]], key: str = "norm_dft", permutations: int = 2000,
                    level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """CADFT's update noise against what unequal weights alone would give, from the per-sample records.

    The noise of a minibatch update `sum_i w_i g_i / B` grows with the weighted per-sample second moment
    `sum_i w_i^2 |g_i|^2`; DFT's is `sum_i |g_i|^2`. Their ratio, over every minibatch, is `observed` (divided by
    the tokens, as `normalize: tokens` trains). Two nulls say what weights that know nothing of the gradients would
    give:
    - `kish`: each minibatch's mean of `w^2` (Kish's design effect `mean(w^2) / mean(w)^2` times the step's shrink
      `mean(w)^2`), weighted by the minibatch's `sum |g|^2`: the permutations' expectation, exactly;
    - `permuted`: the same weights shuffled within each minibatch, `permutations` times: its mean and the range
      that holds `level` of it.
    `p_lower`: the permutation p-value of a ratio this low, (count at or below + 1) / (permutations + 1). The verdict
    is the permutation test's: "compatibility lowers the noise" when the observed ratio is below the permuted
    range, "compatibility raises the noise" above it, else "no compatibility effect" (the weights' inequality
    alone). `effect` is observed over `kish`, with a percentile bootstrap interval over minibatches (how much it
    moves with the minibatches drawn; None with one minibatch). `matched_step` divides each minibatch by
    `mean(w)^2` (the noise at an unweighted-mean step size); minibatches whose weights are all 0 are left out of
    it. `key`: the per-sample norm of the term CADFT weighs."""
    import numpy as np

    groups: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        groups.setdefault(r["minibatch"], []).append((r["weight"], r[key] ** 2))
    batches = [(np.array([w for w, _ in g]), np.array([n for _, n in g])) for _, g in sorted(groups.items())]
    dft = np.array([n.sum() for _, n in batches])
    total = float(dft.sum())
    if not total:
        raise ColdstartError("mechanism: every per-sample gradient is zero; there is no noise to compare")
    observed_per = np.array([float((w * w * n).sum()) for w, n in batches])
    kish_per = np.array([float((w * w).mean()) * d for (w, _), d in zip(batches, dft)])
    rng = np.random.default_rng(seed)
    null = np.zeros(permutations)
    for w, n in batches:
        shuffled = np.stack([rng.permutation(w) for _ in range(permutations)]) if permutations else np.zeros((0, len(w)))
        null += (shuffled**2 * n).sum(axis=1)
    null /= total
    observed, kish = float(observed_per.sum() / total), float(kish_per.sum() / total)
    tail = (1 - level) / 2
    low, high = (float(x) for x in np.quantile(null, [tail, 1 - tail]))
    effect_interval: list[float | None] = [None, None]
    if len(batches) > 1:
        picked = rng.integers(len(batches), size=(permutations, len(batches)))
        sums = kish_per[picked].sum(axis=1)
        effects = observed_per[picked].sum(axis=1)[sums > 0] / sums[sums > 0]
        if len(effects):
            effect_interval = [float(x) for x in np.quantile(effects, [tail, 1 - tail])]
    verdict = ("compatibility lowers the noise" if observed < low else
               "compatibility raises the noise" if observed > high else "no compatibility effect")
    shrink = np.array([float(w.mean()) ** 2 for w, _ in batches])
    kept = shrink > 0
    kept_total = float(dft[kept].sum())
    return {
        "observed": observed, "kish": kish, "permuted": float(null.mean()), "permuted_interval": [low, high],
        "p_lower": float((np.sum(null <= observed) + 1) / (permutations + 1)),
        "effect": observed / kish if kish else None, "effect_interval": effect_interval, "verdict": verdict,
        "permutations": permutations,
        "matched_step": {
            "observed": float((observed_per[kept] / shrink[kept]).sum() / kept_total) if kept_total else None,
            "kish": float((kish_per[kept] / shrink[kept]).sum() / kept_total) if kept_total else None,
        },
    }
