"""What bf16 costs and gives on this machine: matrix-multiply rates in fp32 and bf16, and what bf16 does to the
per-token log-probs GRPO's ratio is made of, on the embedded model with the quickstart's RL settings.

Completions are sampled (fp32) for RL prompts; their per-token log-probs are then computed three ways:
- fp32: weights and arithmetic in fp32 (an fp32 run);
- autocast: fp32 weights under bf16 autocast (what a bf16 run's trainer computes, old and new log-probs alike, so
  its first-iteration ratio is exactly 1);
- bf16 weights: the weights cast to bf16 (what a generator with bf16 weights, such as vLLM, samples from).
The ratio exp(logp_autocast - logp_bf16_weights) per token is the importance ratio a trainer would see against a
bf16-weights sampler (the training-inference mismatch); against fp32 it shows bf16's own rounding.

    python -m bench.precision
"""

from __future__ import annotations

import copy

import torch

from bench.common import emit, workload
from coldstart.compatibility import token_logprobs
from coldstart.data import rl_prompts
from coldstart.generation import generate, render_prompt
from coldstart.models import load_model, load_tokenizer, resolve_model_path
from coldstart.precision import matmul_rate


def logprobs(model, ids, mask, labels, autocast: bool) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        log_probs, keep = token_logprobs(model, ids, mask, labels, fused=False)
    return log_probs.float()[keep]


def quantiles(x: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(x, torch.tensor([0.01, 0.5, 0.99]))
    return {"p01": float(q[0]), "median": float(q[1]), "p99": float(q[2])}


def main() -> None:
    cfg = workload()
    fp32_rate, bf16_rate = matmul_rate(torch.float32, 2048, 2.0), matmul_rate(torch.bfloat16, 2048, 2.0)
    path = resolve_model_path(cfg.model.name_or_path)
    model, tokenizer = load_model(cfg.model, path), load_tokenizer(path, False)
    model.eval()
    prompts, _ = rl_prompts(cfg.data, 16, cfg.seed)
    out = generate(model, tokenizer, prompts["prompt"], num_samples=4, max_new_tokens=cfg.rl.max_completion_length,
                   temperature=cfg.rl.temperature, top_p=cfg.rl.top_p, seed=cfg.seed)
    rows = []
    for prompt, completions in zip(prompts["prompt"], out):
        prefix = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        for c in completions:
            done = tokenizer(c.text, add_special_tokens=False)["input_ids"]
            rows.append((prefix, done))
    width = max(len(p) + len(d) for p, d in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, (p, d) in enumerate(rows):
        ids[i, : len(p) + len(d)] = torch.tensor(p + d)
        mask[i, : len(p) + len(d)] = 1
        labels[i, len(p): len(p) + len(d)] = torch.tensor(d)
    fp32 = logprobs(model, ids, mask, labels, autocast=False)
    autocast = logprobs(model, ids, mask, labels, autocast=True)
    halved = copy.deepcopy(model).to(torch.bfloat16)
    bf16_weights = logprobs(halved, ids, mask, labels, autocast=False)
    result = {"matmul_fp32_gflops": fp32_rate, "matmul_bf16_gflops": bf16_rate, "bf16_over_fp32_matmul": bf16_rate / fp32_rate,
              "tokens": int(fp32.numel())}
    for name, other in (("autocast_vs_fp32", autocast), ("bf16_weights_vs_fp32", bf16_weights),
                        ("autocast_vs_bf16_weights", None)):
        diff = (autocast - bf16_weights) if other is None else (other - fp32)
        result[f"logp_{name}_mean_abs"] = float(diff.abs().mean())
        result[f"logp_{name}_max_abs"] = float(diff.abs().max())
        result.update({f"ratio_{name}_{k}": v for k, v in quantiles(torch.exp(diff)).items()})
    emit(result)


if __name__ == "__main__":
    main()
