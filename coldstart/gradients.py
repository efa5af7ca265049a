"""The mechanism behind CADFT's stability claim, measured at a fixed policy: does a sample's gradient grow as its
compatibility falls (the paper's assumption), and does CADFT's update then vary less than DFT's, and at what bias?

For each sample of K minibatches of B demonstrations (after a batched forward per minibatch, without gradients,
for the NLL statistics that set the weights and the per-token probabilities), a forward and backward pass of its
own give its gradient under the SFT term `-sum_t l_t`, another under the DFT term `-sum_t sg(p_t) l_t`, and a third
under the term CADFT weighs, each normalised as the warm-up trains (`cadft.normalize`: divided by the minibatch's
mean completion length under `tokens`, TRL's, so that a minibatch's update is the mean of its samples' gradients;
by the sample's own length under `samples`; all three alike, so that they differ by their weights alone, though an
SFT or DFT warm-up trains per token). One gradient at a time (`passes`): a 7B model's parameters fit a few
times on a GPU, not ten. CADFT's sample gradient is its weight times the term's (the weight carries no gradient),
the weight from the minibatch's own NLL statistics (`cadft.stats: batch`, with the run's beta, gate and floor).

Nothing of size B x parameters is kept: per-sample gradient norms, and per loss the minibatch updates' squared
norms, their inner products with the reference gradients and their running sum (`noise_statistics` and
`error_statistics` turn those into the noise and the error). The references: the full-sample gradient of the term
CADFT weighs (the mean of its minibatch updates, from the first pass) and, given held-out demonstrations, the same
term's gradient on them. With a `preconditioner` (`adam_preconditioner`: 1 / (sqrt(v_hat) + eps) from a
checkpoint's AdamW state) every gradient is multiplied by it first: the measurement in the geometry of the step
the optimizer takes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable

import torch

from coldstart.compatibility import pad_batch, sequence_nll, token_logprobs, tokenize_sample
from coldstart.config import CadftSection
from coldstart.errors import ColdstartError
from coldstart.losses import batch_moments, cadft_weights, mean_std, token_loss

logger = logging.getLogger(__name__)

LOSSES = ("sft", "dft", "cadft")
# per-token probability bins: where in p the SFT and DFT terms' logit gradients sit
BIN_EDGES = tuple(i / 10 for i in range(11))


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


def error_statistics(sq_norms: list[float], sq_mean: float, dot_mean: float, sq_reference: float,
                     dots: list[float] | None = None) -> dict[str, float | None]:
    """A loss's K minibatch updates G_k against a reference gradient R, from inner products alone (`sq_norms`:
    each |G_k|^2; `sq_mean`: |mean G_k|^2; `dot_mean`: <mean G_k, R>; `sq_reference`: |R|^2):
    - `mse`: mean_k |G_k - R|^2, what an optimizer feels: the squared bias plus the spread;
    - `sq_bias`: |mean G_k - R|^2; `cosine`: the cosine of mean G_k with R (1: the same direction, whatever the
      step's size);
    - `mean_cosine`: the mean over minibatches of each update's cosine with R, where each one's inner product
      with R (`dots`) is known.
    A cosine is None where a norm is 0."""
    # both are squared norms: a rounding below 0 is 0
    mse = max(sum(sq_norms) / len(sq_norms) - 2 * dot_mean + sq_reference, 0.0)
    scale = math.sqrt(max(sq_mean, 0.0) * sq_reference)
    cosines = None
    if dots is not None and sq_reference > 0 and all(s > 0 for s in sq_norms):
        cosines = [d / math.sqrt(s * sq_reference) for d, s in zip(dots, sq_norms)]
    return {"mse": mse, "sq_bias": max(sq_mean - 2 * dot_mean + sq_reference, 0.0),
            "cosine": max(-1.0, min(1.0, dot_mean / scale)) if scale > 0 else None,
            "mean_cosine": sum(cosines) / len(cosines) if cosines else None}


def token_bins(probabilities: torch.Tensor) -> list[dict[str, float]]:
    """Per bin of the labelled tokens' probabilities p (`BIN_EDGES`): its share of the tokens, and its share of the
    SFT and DFT terms' logit gradients. A token's SFT logit gradient `softmax - e_y` has norm between 1 - p and
    sqrt(2) (1 - p), DFT's is p times it: the shares are of sum(1 - p) and sum(p (1 - p)), exact up to that
    factor. DFT's gradient peaks at p = 0.5 and vanishes as p -> 0, where SFT's is largest."""
    p = probabilities.double().flatten()
    sft, dft = 1 - p, p * (1 - p)
    total = {"tokens": max(p.numel(), 1), "sft": max(float(sft.sum()), 1e-300), "dft": max(float(dft.sum()), 1e-300)}
    out = []
    for i, (low, high) in enumerate(zip(BIN_EDGES, BIN_EDGES[1:])):
        inside = (p >= low) & ((p < high) if i < len(BIN_EDGES) - 2 else (p <= high))
        out.append({"low": low, "high": high, "tokens": float(inside.sum()) / total["tokens"],
                    "sft": float(sft[inside].sum()) / total["sft"], "dft": float(dft[inside].sum()) / total["dft"]})
    return out


def adam_preconditioner(model, folder: str | Path) -> list[torch.Tensor] | None:
    """1 / (sqrt(v_hat) + eps) per trainable parameter (in `model.parameters()` order) from the AdamW state a
    Trainer checkpoint keeps (`optimizer.pt`, bias-corrected by its step count): AdamW's step is the first moment
    times it. None, with a warning that says why, when the folder keeps no optimizer state (a stage's `final` does
    not) or one that does not fit the model as loaded (a LoRA run's adapters against its merged model; an optimizer
    that keeps no second moment)."""
    from transformers import Trainer

    path = Path(folder) / "optimizer.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Trainer.create_optimizer's groups: the decayed parameters, then the rest, each in named_parameters order
    decay = set(Trainer.get_decay_parameter_names(None, model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ordered = [p for n, p in named if n in decay] + [p for n, p in named if n not in decay]
    groups = state["param_groups"]
    ids = [i for g in groups for i in g["params"]]
    if len(ids) != len(ordered):
        logger.warning("%s: the optimizer holds %d parameters, the model trains %d; not measured in Adam's geometry",
                       path, len(ids), len(ordered))
        return None
    group_of = {i: g for g in groups for i in g["params"]}
    by_param = {}
    for i, p in zip(ids, ordered):
        s = state["state"].get(i)
        if s is None or "exp_avg_sq" not in s:
            logger.warning("%s: parameter %d has no second moment (not an Adam state); not measured in Adam's "
                           "geometry", path, i)
            return None
        beta2, eps = group_of[i]["betas"][1], group_of[i]["eps"]
        v_hat = s["exp_avg_sq"].float() / (1 - beta2 ** float(s["step"]))
        by_param[id(p)] = 1 / (v_hat.sqrt() + eps)
    device = next(model.parameters()).device
    return [by_param[id(p)].to(device) for p in model.parameters() if p.requires_grad]


def _sq(vectors: list[torch.Tensor]) -> float:
    """The squared norm of a list of tensors taken as one vector (per-tensor norms, in fp64)."""
    return float(sum(float(torch.linalg.vector_norm(v, dtype=torch.float64)) ** 2 for v in vectors))


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The inner product of two lists of tensors taken as vectors, accumulated in fp64 like `_sq`, so that a
    vector's inner product with itself is its squared norm to fp64's precision."""
    return float(sum(float(torch.dot(x.flatten().double(), y.flatten().double())) for x, y in zip(a, b)))


def passes(token_weighting: str) -> tuple[tuple[str, str], ...]:
    """The gradient passes, one per loss, as (loss, the per-sample term it takes the gradient of): the term CADFT
    weighs goes first, so that its full-sample gradient (the mean of its minibatch updates) is the reference the
    other two passes' updates are measured against. A pass holds the gradient, one minibatch update and a running
    sum, besides the references: at most 6 parameter-sized buffers with both references and a preconditioner."""
    own = "dft" if token_weighting == "dft" else "sft"
    other = "sft" if own == "dft" else "dft"
    return ((own, own), (other, other), ("cadft", own))


def measure(model, tokenizer, samples: list[dict[str, Any]], batch_size: int, cadft: CadftSection | None = None,
            max_length: int | None = None, fused: bool = False, progress: bool = True,
            held_out: list[dict[str, Any]] | None = None,
            preconditioner: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Per-sample gradient norms (sft, dft; cadft's is its weight times the gradient of its token term, dft's or,
    with `token_weighting: none`, sft's), each loss's minibatch update statistics over `len(samples) // batch_size`
    minibatches taken in order, their error against the full-sample gradient of the term CADFT weighs (and against
    its gradient on `held_out` demonstrations, when given), and the labelled tokens' probability bins.
    `samples`: prompt/completion rows (extra fields such as `id` and `style` are carried into the per-sample
    records). Sums are kept in fp32 (a bf16 model's buffers are then twice its size each).

    Memory: beyond the model, at most 6 parameter-sized buffers at once (`passes`), at the cost of a forward per
    sample per pass; tied input and output embeddings add, for a moment, two more of the shared matrix while
    autograd sums its two gradients."""
    from tqdm.auto import tqdm

    c = cadft or CadftSection()
    k = len(samples) // batch_size
    if k < 1:
        raise ColdstartError(f"mechanism: {len(samples)} demonstrations do not make one minibatch of {batch_size}")
    params = [p for p in model.parameters() if p.requires_grad]
    minibatches = [samples[b * batch_size:(b + 1) * batch_size] for b in range(k)]
    tokenize = lambda s: tokenize_sample(tokenizer, s["prompt"], s["completion"], max_length)  # noqa: E731
    rows = [[tokenize(s) for s in chunk] for chunk in minibatches]
    order = passes(c.token_weighting)
    own = order[0][1]
    was_training = model.training
    model.eval()  # dropout off: the gradient of the policy as it is
    try:
        stats, probabilities = [], []  # per minibatch: each sample's NLL, tokens and weight
        for chunk in rows:
            with torch.no_grad():
                log_probs, mask = _logprobs(model, tokenizer, chunk, fused)
                nll, tokens = sequence_nll(log_probs.float(), mask)
            probabilities.append(log_probs.float()[mask.bool()].exp().cpu())
            weights = cadft_weights(nll, *mean_std(batch_moments(nll)), c.beta, c.gate_min, c.weight_floor)
            stats.append((nll, tokens, weights))
        references = {}
        if held_out:
            references["held_out"] = _mean_gradient(model, tokenizer, [tokenize(s) for s in held_out], own,
                                                    c.normalize, fused, params, preconditioner)
        norms: dict[str, list[list[float]]] = {}
        updates_stats, errors, per_minibatch = {}, {}, {}
        bar = tqdm(total=k * len(order), desc="gradients", unit="minibatch", disable=not progress)
        for loss, term in order:
            total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
            sq_norms: list[float] = []
            dots: dict[str, list[float]] = {name: [] for name in references}
            norms[loss] = []
            for chunk, (nll, tokens, weights) in zip(rows, stats):
                divisors = (tokens.float().clamp(min=1) if c.normalize == "samples"
                            else tokens.float().mean().expand(len(chunk)))
                update = [torch.zeros_like(p, dtype=torch.float32) for p in params]  # sum_i coefficient_i x gradient_i
                chunk_norms = []
                for i, row in enumerate(chunk):
                    lp, m = _logprobs(model, tokenizer, [row], fused)
                    lp, m = lp[0], m[0]
                    token_weight = lp.detach().exp() if term == "dft" else 1.0
                    grads = torch.autograd.grad(-(lp * m * token_weight).sum() / float(divisors[i]), params,
                                                allow_unused=True)
                    grads = [torch.zeros_like(p, dtype=torch.float32) if g is None else g.float()
                             for g, p in zip(grads, params)]
                    if preconditioner is not None:
                        torch._foreach_mul_(grads, preconditioner)
                    chunk_norms.append(math.sqrt(_sq(grads)))
                    coefficient = float(weights[i]) if loss == "cadft" else 1.0
                    torch._foreach_add_(update, grads, alpha=coefficient / len(chunk))
                    del grads
                norms[loss].append(chunk_norms)
                sq_norms.append(_sq(update))
                for name, reference in references.items():
                    dots[name].append(_dot(update, reference))
                torch._foreach_add_(total, update)
                del update
                bar.update()
            torch._foreach_div_(total, k)
            mean = total
            sq_mean = _sq(mean)
            updates_stats[loss] = noise_statistics(sq_norms, sq_mean, batch_size)
            if loss == own:
                references = {"full_sample": mean, **references}
            errors[loss] = {name: error_statistics(sq_norms, sq_mean, _dot(mean, reference), _sq(reference),
                                                   dots.get(name))
                            for name, reference in references.items()}
            per_minibatch[loss] = {"sq_norm": sq_norms, **{f"dot_{name}": d for name, d in dots.items()}}
            del mean
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
    return {"minibatches": k, "batch_size": batch_size, "beta": c.beta, "weighed_term": own,
            "normalize": c.normalize, "geometry": "adam" if preconditioner is not None else "euclidean",
            "held_out": len(held_out or []), "samples": records,
            "losses": {loss: updates_stats[loss] for loss in LOSSES},
            "errors": {loss: errors[loss] for loss in LOSSES},
            "per_minibatch": {loss: per_minibatch[loss] for loss in LOSSES},
            "token_bins": token_bins(torch.cat(probabilities))}


def _mean_gradient(model, tokenizer, rows: list[dict[str, list[int]]], term: str, normalize: str, fused: bool,
                   params: list[torch.Tensor], preconditioner: list[torch.Tensor] | None) -> list[torch.Tensor]:
    """The gradient of `term` over `rows` as one batch of the warm-up would take it (divided by their tokens, or
    each sample by its own and then by their number): the held-out reference. A sample at a time, as the rest of
    the measurement goes, so that its memory is one sample's activations."""
    total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    count = 0.0
    for row in rows:
        lp, m = _logprobs(model, tokenizer, [row], fused)
        _, tokens = sequence_nll(lp.detach().float(), m)
        per_sample = 1 / tokens.float().clamp(min=1) if normalize == "samples" else None
        loss = token_loss(lp, m, 1.0, "dft" if term == "dft" else "none", per_sample)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        torch._foreach_add_(total, [torch.zeros_like(t) if g is None else g.float() for g, t in zip(grads, total)])
        count += len(tokens) if normalize == "samples" else float(tokens.sum())
    torch._foreach_div_(total, max(count, 1.0))
    if preconditioner is not None:
        torch._foreach_mul_(total, preconditioner)
    return total


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
    """`by_decile` of each per-sample gradient norm the records keep (sft, dft, cadft)."""
    return {loss: by_decile(records, f"norm_{loss}") for loss in ("sft", "dft", "cadft")}


def trend_verdict(low: float | None, high: float | None) -> str:
    """The assumption's verdict from a rank correlation's interval: `holds` above 0, `fails` below, else `not
    shown`."""
    return "holds" if low is not None and low > 0 else "fails" if high is not None and high < 0 else "not shown"


def assumption(records: Iterable[dict[str, Any]], key: str = "norm_dft") -> dict[str, Any]:
    """Whether the least compatible samples carry the largest gradients, as a trend: Spearman's rank correlation of
    the NLL with the gradient norm (`rho`, its permutation p-value and bootstrap interval), and the same holding
    the token count fixed (`partial_rho`, `statistics.rank_correlation`): a norm is the sample's contribution to
    the update, summed over its tokens, so under `normalize: tokens` longer demonstrations weigh more, and
    `rho_tokens` (the NLL against the count) says how far length could stand in for compatibility. The verdict
    reads the length-controlled interval: `holds` when it lies above 0, `fails` below, otherwise `not shown`.
    The deciles (mean norm per compatibility tenth) are for reading, not for the verdict: the least compatible
    tenth's mean of a few samples is too noisy to judge by. A rho is None where either side has no spread."""
    from coldstart.statistics import rank_correlation, spearman

    records = list(records)
    nll = [x["nll"] for x in records]
    norms = [x[key] for x in records]
    tokens = [x.get("tokens", 0) for x in records]
    r = spearman(nll, norms)
    plain = rank_correlation(nll, norms)
    partial = rank_correlation(nll, norms, tokens)
    deciles = by_decile(records, key)
    verdict = trend_verdict(*partial["interval"])
    return {"rho": r["rho"], "p": r["p"], "rho_interval": plain["interval"], "partial_rho": partial["rho"],
            "partial_interval": partial["interval"], "controlled_for_tokens": partial["controlled"],
            "rho_tokens": spearman(nll, tokens)["rho"], "least_compatible_decile": deciles[0]["value"],
            "largest_decile": max(d["value"] for d in deciles), "verdict": verdict, "deciles": deciles}


def update_ratios(per_minibatch: dict[str, dict[str, list[float]]], resamples: int = 2000, level: float = 0.95,
                  seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each loss's mean squared minibatch update over DFT's, with a percentile bootstrap interval over minibatches
    (`scipy.stats.bootstrap`, paired: the losses were measured on the same minibatches). None with one minibatch."""
    import numpy as np
    from scipy.stats import bootstrap

    dft = np.asarray(per_minibatch["dft"]["sq_norm"])
    out = {}
    for loss, part in per_minibatch.items():
        sq = np.asarray(part["sq_norm"])
        ratio = float(sq.mean() / dft.mean()) if dft.mean() > 0 else None
        interval: list[float | None] = [None, None]
        if len(dft) > 1 and ratio is not None:
            if np.array_equal(sq, dft):  # DFT against itself: every resample gives 1
                interval = [1.0, 1.0]
            else:
                result = bootstrap((sq, dft), lambda a, b: a.mean() / b.mean(), paired=True, vectorized=False,
                                   n_resamples=resamples, confidence_level=level, method="percentile",
                                   random_state=seed)
                interval = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
        out[loss] = {"ratio": ratio, "interval": interval}
    return out


def weighting_nulls(records: list[dict[str, Any]], key: str = "norm_dft", permutations: int = 2000,
                    level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """CADFT's update noise against what unequal weights alone would give, from the per-sample records.

    The noise of a minibatch update `sum_i w_i g_i / B` grows with the weighted per-sample second moment
    `sum_i w_i^2 |g_i|^2`; DFT's is `sum_i |g_i|^2`. Their ratio, over every minibatch, is `observed` (the norms as
    `measure` normalised them). Two nulls say what weights that know nothing of the gradients would
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
