"""Generation against this machine's bounds, on the embedded model with the quickstart's settings.

The bounds: fp32 matmul throughput (a 2048 x 2048 product) and memory bandwidth (a 512 MiB copy); from them, decode
at batch 1 can go no faster than all weights read once per token (bandwidth), and at batch B no faster than 2 x
parameters FLOPs per token at the matmul rate (compute). The model's bare forward: a prefill of the prompts, then
one token per row per step with the KV cache, at each batch size below.

Each generation path runs as its stage runs it, and the same work (the same prompts, padded lengths and number of
steps) runs again as a bare forward loop: the path's fraction of the bare forward is bare time / path time, its
fraction of the compute bound is its useful FLOPs (prompt and generated tokens, 2 x parameters each) over time x
the matmul rate (`generated_of_compute_bound` counts the generated tokens alone: decoding's share). The bare
forward at batch 1 is also given as a fraction of the bandwidth bound. The sampled paths (handoff, rewriting) also
run with transformers' own sampling for the same number of steps: the speed-up of coldstart's `TokenSampler`.

- eval: greedy, `eval.batch_size`, `eval.max_new_tokens`, the first 100 held-out prompts
- handoff: `handoff.report_prompts` RL prompts x `rl.num_generations` samples, `handoff.batch_size`
- rewriting: 16 training prompts x `warmup.rewrite.num_candidates` samples (the default batch of 16)
- grpo: TRL's GRPOTrainer generation config (`trainer.generation_config`) on one generation round of the
  quickstart (8 prompts x 8 completions)

With `--precision bf16` the weights are loaded in bf16 and the compute bound is the bf16 matmul rate: each path
against its own precision's bound and bare forward.

    python -m bench.decode [--precision bf16]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import emit, workload
from coldstart.data import load_samples, rl_prompts
from coldstart.generation import generate, render_prompt
from coldstart.models import load_model, load_tokenizer, resolve_model_path
from coldstart.precision import DTYPES, NAMES


def seconds(fn, repeats: int = 1) -> float:
    fn()  # first-call set-up off the clock
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def machine_bounds(dtype: torch.dtype) -> dict[str, float]:
    a, b = torch.randn(2048, 2048).to(dtype), torch.randn(2048, 2048).to(dtype)
    matmul = 2 * 2048 ** 3 / seconds(lambda: a @ b, 20)
    src = torch.empty(128 * 2 ** 20)  # 512 MiB of fp32
    dst = torch.empty_like(src)
    bandwidth = 2 * src.numel() * 4 / seconds(lambda: dst.copy_(src), 10)  # read + write
    return {"matmul_gflops": matmul / 1e9, "bandwidth_gbs": bandwidth / 1e9}


@torch.no_grad()
def bare_loop(model, input_ids, attention_mask, steps: int) -> tuple[float, float]:
    """Seconds for a prefill of the batch, and for it and `steps` - 1 single-token forwards with the cache (greedy
    tokens), timed in the same run."""
    start = time.perf_counter()
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, logits_to_keep=1)
    prefilled = time.perf_counter() - start
    cache, mask = out.past_key_values, attention_mask
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps - 1):
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        out = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    return prefilled, time.perf_counter() - start


def forward_rates(model, tokenizer, prompts, batch: int, steps: int = 16) -> dict[str, float]:
    """Prefill tokens per second and decode tokens per second (one per row per step) at `batch` rows."""
    texts = [render_prompt(tokenizer, p) for p in (prompts * batch)[:batch]]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    bare_loop(model, enc["input_ids"], enc["attention_mask"], 2)  # warm
    prefill, total = bare_loop(model, enc["input_ids"], enc["attention_mask"], steps + 1)
    return {"prefill_tokens_per_s": int(enc["attention_mask"].sum()) / prefill,
            "decode_tokens_per_s": batch * steps / (total - prefill)}


def path(model, tokenizer, prompts, params: int, matmul_flops: float, batch_size: int, **kwargs) -> dict[str, float]:
    """One generation path: its time, and the bare forward's for the same batches, steps and padded lengths."""
    start = time.perf_counter()
    out = generate(model, tokenizer, prompts, batch_size=batch_size, **kwargs)
    took = time.perf_counter() - start
    n = kwargs.get("num_samples", 1)
    texts = [render_prompt(tokenizer, p) for p in prompts for _ in range(n)]
    flat = [c for completions in out for c in completions]
    batches = []  # (the batch as generate padded it, the steps generate ran: until every row had stopped)
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i: i + batch_size], return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False)
        batches.append((enc, max(c.num_tokens + (1 if c.finished else 0) for c in flat[i: i + batch_size])))
    bare = sum(bare_loop(model, enc["input_ids"], enc["attention_mask"], steps)[1] for enc, steps in batches)
    generated = sum(c.num_tokens for c in flat)
    useful = sum(int(enc["attention_mask"].sum()) for enc, _ in batches) + generated
    out = {"seconds": took, "tokens_per_s": generated / took, "of_bare_forward": bare / took,
           "of_compute_bound": 2 * params * useful / (took * matmul_flops),
           "generated_of_compute_bound": 2 * params * generated / (took * matmul_flops), "batch_size": batch_size}
    if kwargs.get("temperature"):  # the same batches with transformers' own sampling, for the sampler's speed-up
        hf = 0.0
        for enc, steps in batches:
            start = time.perf_counter()
            with torch.no_grad():  # the same number of steps, so that only the sampling differs
                model.generate(**enc, do_sample=True, temperature=kwargs["temperature"], top_p=kwargs.get("top_p", 1.0),
                               top_k=0, min_new_tokens=steps, max_new_tokens=steps, pad_token_id=tokenizer.pad_token_id)
            hf += time.perf_counter() - start
        out["transformers_sampling_seconds"] = hf
        out["sampler_speedup"] = hf / took
    return out


def grpo_round(cfg, model, tokenizer):
    """The quickstart's first GRPO generation round as its GRPOTrainer runs it: the trainer's generation config and
    the round's prompts, tokenized (each repeated `rl.num_generations` times, left-padded)."""
    import tempfile
    from pathlib import Path

    from coldstart.stages.rl import build_trainer

    prompts, _ = rl_prompts(cfg.data, cfg.rl.num_prompts, cfg.seed)
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(cfg, Path(out), prompts, model, tokenizer)
        generation_config = trainer.generation_config
    per_round, _ = cfg.rl.generation_round(1)
    chosen = prompts["prompt"][: per_round // cfg.rl.num_generations]
    texts = [render_prompt(tokenizer, p) for p in chosen for _ in range(cfg.rl.num_generations)]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    model.eval()
    return generation_config, enc


def grpo_path(cfg, model, tokenizer, params: int, matmul_flops: float) -> dict[str, float]:
    """TRL's generation for one GRPO round, with the config the quickstart's GRPOTrainer builds."""
    generation_config, enc = grpo_round(cfg, model, tokenizer)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    with torch.no_grad():
        ids = model.generate(**enc, generation_config=generation_config)
    took = time.perf_counter() - start
    completions = ids[:, enc["input_ids"].shape[1]:]
    stop = torch.isin(completions, torch.tensor(generation_config.eos_token_id))
    lengths = torch.where(stop.any(1), stop.int().argmax(1), completions.shape[1])
    _, bare = bare_loop(model, enc["input_ids"], enc["attention_mask"], completions.shape[1])
    useful = int(enc["attention_mask"].sum()) + int(lengths.sum())
    return {"seconds": took, "tokens_per_s": int(lengths.sum()) / took, "of_bare_forward": bare / took,
            "of_compute_bound": 2 * params * useful / (took * matmul_flops),
            "generated_of_compute_bound": 2 * params * int(lengths.sum()) / (took * matmul_flops),
            "batch_size": len(enc["input_ids"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    cfg = workload()
    path_ = resolve_model_path(cfg.model.name_or_path)
    model, tokenizer = load_model(cfg.model, path_, dtype=NAMES[args.precision]), load_tokenizer(path_, False)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bounds = machine_bounds(DTYPES[args.precision])
    matmul = bounds["matmul_gflops"] * 1e9
    result: dict = {**bounds, "parameters": params,
                    "bound_batch1_tokens_per_s": bounds["bandwidth_gbs"] * 1e9 / weight_bytes,
                    "bound_compute_tokens_per_s": matmul / (2 * params)}
    test, _ = load_samples(cfg.data, "test", cfg.seed)
    train, _ = load_samples(cfg.data, "train", cfg.seed)
    rl, _ = rl_prompts(cfg.data, cfg.rl.num_prompts, cfg.seed)
    held_out = test["prompt"][:100]
    for batch in sorted({1, 16, cfg.handoff.batch_size, cfg.eval.batch_size, 64, 256}):
        for key, value in forward_rates(model, tokenizer, held_out, batch).items():
            result[f"forward_b{batch}_{key}"] = value
    result["forward_b1_of_bandwidth_bound"] = result["forward_b1_decode_tokens_per_s"] / result["bound_batch1_tokens_per_s"]
    paths = {
        "eval": path(model, tokenizer, held_out, params, matmul, cfg.eval.batch_size,
                     max_new_tokens=cfg.eval.max_new_tokens),
        "handoff": path(model, tokenizer, rl["prompt"][: cfg.handoff.report_prompts], params, matmul,
                        cfg.handoff.batch_size, num_samples=cfg.rl.num_generations,
                        max_new_tokens=cfg.rl.max_completion_length, temperature=cfg.rl.temperature,
                        top_p=cfg.rl.top_p, seed=cfg.seed),
        "rewriting": path(model, tokenizer, train["prompt"][:16], params, matmul, 16,
                          num_samples=cfg.warmup.rewrite.num_candidates, max_new_tokens=cfg.warmup.rewrite.max_new_tokens,
                          temperature=cfg.warmup.rewrite.temperature, top_p=cfg.warmup.rewrite.top_p, seed=cfg.seed),
        "grpo": grpo_path(cfg, model, tokenizer, params, matmul),
    }
    for name, figures in paths.items():
        for key, value in figures.items():
            result[f"generation_{name}_{key}"] = value
    emit(result)


if __name__ == "__main__":
    main()
