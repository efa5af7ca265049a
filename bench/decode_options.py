"""Generation settings tried side by side on the evaluation's path and on TRL's GRPO round, against what coldstart
does today: each variant's time over the baseline's and whether its completions are the baseline's, token for token.

The evaluation's path (greedy, `eval.batch_size`, `eval.max_new_tokens`, the first 100 held-out prompts) runs as
`coldstart.generation.generate` runs it (SDPA attention, dynamic KV cache, 2 threads, prompts in data order), then
with one thing changed at a time:

- eager: `attn_implementation="eager"` instead of SDPA
- static_cache: `cache_implementation="static"` (a preallocated cache)
- one_batch: all 100 prompts in one batch
- sorted: prompts sorted by token length before batching (less padding), completions put back in order
- one_thread: `torch.set_num_threads(1)`

and the baseline again at the end (its drift says how far apart two runs of the same thing fall on this shared
machine). TRL's GRPO round (the quickstart's: 8 prompts x 8 completions, `trainer.generation_config`) runs with its
own settings and with `cache_implementation="static"`, from the same random state.

    python -m bench.decode_options
"""

from __future__ import annotations

import copy
import time

import torch

from bench.common import emit, workload
from coldstart.data import load_samples, rl_prompts
from coldstart.generation import generate, render_prompt
from coldstart.models import load_model, load_tokenizer, resolve_model_path


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def eval_variants(cfg, model, tokenizer, prompts) -> dict[str, float]:
    batch, tokens = cfg.eval.batch_size, cfg.eval.max_new_tokens

    def run(batch_size=batch, order=None):
        chosen = prompts if order is None else [prompts[i] for i in order]
        out = generate(model, tokenizer, chosen, batch_size=batch_size, max_new_tokens=tokens)
        texts = [c[0].text for c in out]
        if order is not None:
            back = [""] * len(texts)
            for position, i in enumerate(order):
                back[i] = texts[position]
            texts = back
        return texts

    def with_attention(name):
        model.set_attn_implementation(name)
        try:
            return run()
        finally:
            model.set_attn_implementation("sdpa")

    def with_cache(name):
        model.generation_config.cache_implementation = name
        try:
            return run()
        finally:
            model.generation_config.cache_implementation = None

    def with_threads(n):
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return run()
        finally:
            torch.set_num_threads(before)

    lengths = [len(tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]) for p in prompts]
    variants = {
        "eager": lambda: with_attention("eager"),
        "static_cache": lambda: with_cache("static"),
        "one_batch": lambda: run(batch_size=len(prompts)),
        "sorted": lambda: run(order=sorted(range(len(prompts)), key=lengths.__getitem__)),
        "one_thread": lambda: with_threads(1),
    }
    run()  # first-call set-up off the clock
    base_s, base = timed(run)
    out: dict[str, float] = {"eval_baseline_s": base_s}
    for name, fn in variants.items():
        seconds, texts = timed(fn)
        out[f"eval_{name}_s"] = seconds
        out[f"eval_{name}_over_baseline_time"] = seconds / base_s
        out[f"eval_{name}_same_completions"] = float(texts == base)
    again_s, again = timed(run)
    out["eval_baseline_again_over_baseline_time"] = again_s / base_s
    out["eval_baseline_again_same_completions"] = float(again == base)
    return out


def grpo_variants(cfg, model, tokenizer) -> dict[str, float]:
    import tempfile
    from pathlib import Path

    from coldstart.stages.rl import build_trainer

    prompts, _ = rl_prompts(cfg.data, cfg.rl.num_prompts, cfg.seed)
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(cfg, Path(out), prompts, model, tokenizer)
        dynamic = trainer.generation_config
    static = copy.deepcopy(dynamic)
    static.cache_implementation = "static"
    per_round, _ = cfg.rl.generation_round(1)
    chosen = prompts["prompt"][: per_round // cfg.rl.num_generations]
    texts = [render_prompt(tokenizer, p) for p in chosen for _ in range(cfg.rl.num_generations)]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    model.eval()

    def run(config):
        torch.manual_seed(cfg.seed)
        with torch.no_grad():
            return model.generate(**enc, generation_config=config)

    run(dynamic)  # first-call set-up off the clock
    base_s, base = timed(lambda: run(dynamic))
    static_s, ids = timed(lambda: run(static))
    return {"grpo_baseline_s": base_s, "grpo_static_cache_s": static_s,
            "grpo_static_cache_over_baseline_time": static_s / base_s,
            "grpo_static_cache_same_completions": float(ids.shape == base.shape and bool((ids == base).all()))}


def main() -> None:
    cfg = workload()
    path = resolve_model_path(cfg.model.name_or_path)
    model, tokenizer = load_model(cfg.model, path), load_tokenizer(path, False)
    model.eval()
    test, _ = load_samples(cfg.data, "test", cfg.seed)
    emit({**eval_variants(cfg, model, tokenizer, test["prompt"][:100]), **grpo_variants(cfg, model, tokenizer)})


if __name__ == "__main__":
    main()
