"""Compatibility scoring on the embedded model, alone in its process: coldstart's scorer (length buckets,
inference mode, log-probs without a `(batch, seq, vocab)` log-softmax) or a naive one (data-set order, fixed-size
batches padded to the longest, full log-softmax under `no_grad`), in samples per second and peak memory.

    python -m bench.scoring --scorer coldstart --samples 512
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from bench.common import emit, naive_logprobs, peak_rss_mb, workload
from coldstart.compatibility import pad_batch, score, tokenize_sample
from coldstart.data import load_samples
from coldstart.models import load_model, load_tokenizer, resolve_model_path


@torch.no_grad()
def naive_score(model, tokenizer, samples, batch_size: int, seed: int) -> list[float]:
    """Per-sample NLL the first way that comes to mind; returns NLLs in the input order."""
    rows = [tokenize_sample(tokenizer, s["prompt"], s["completion"], None) for s in samples]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    model.eval()
    nll = [0.0] * len(rows)
    for start in range(0, len(order), batch_size):
        group = order[start : start + batch_size]
        batch = pad_batch([rows[i] for i in group], tokenizer.pad_token_id)
        token, mask = naive_logprobs(model, batch)
        for i, value in zip(group, (-token.sum(-1) / mask.sum(-1)).tolist()):
            nll[i] = value
    return nll


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scorer", choices=("coldstart", "naive"), required=True)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16, help="rows per batch of the naive scorer")
    args = parser.parse_args()
    cfg = workload(f"data.arith.num_train={args.samples}")
    path = resolve_model_path(cfg.model.name_or_path)
    model, tokenizer = load_model(cfg.model, path), load_tokenizer(path, False)
    samples = list(load_samples(cfg.data, "train", cfg.seed)[0])
    start = time.perf_counter()
    if args.scorer == "coldstart":
        nll = [r["nll"] for r in score(model, tokenizer, samples, None)]
    else:
        nll = naive_score(model, tokenizer, samples, args.batch_size, cfg.seed)
    seconds = time.perf_counter() - start
    emit({"scorer": args.scorer, "seconds": seconds, "samples_per_s": len(samples) / seconds,
          "peak_rss_mb": peak_rss_mb(), "nll": nll})


if __name__ == "__main__":
    main()
