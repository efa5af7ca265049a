"""Generation settings tried side by side on the evaluation's path and on TRL's GRPO round, against what coldstart
does today: each variant's time over the baseline's, run just before it (this shared machine's speed drifts within
minutes), and whether it gives the baseline's completions.

The evaluation's path (greedy, `eval.batch_size`, `eval.max_new_tokens`, the first 100 held-out prompts) runs as
`coldstart.generation.generate` runs it (SDPA attention, dynamic KV cache, torch's default threads, prompts in data
order), then with one thing changed at a time (completions compared as decoded texts):

- eager: `attn_implementation="eager"` instead of SDPA
- static_cache: `cache_implementation="static"` (a preallocated cache; transformers compiles the decode step only
  on accelerators, so this is the static cache alone)
- one_batch: all 100 prompts in one batch
- sorted: prompts sorted by token length before batching (less padding), completions put back in order
- one_thread: `torch.set_num_threads(1)`
- drop_finished: a greedy loop of the bench's own (`greedy_dropping_finished`) that drops a row from the batch and
  its KV cache once it has stopped; `generate` keeps every row until the whole batch has stopped

TRL's GRPO round (the quickstart's first, `bench.decode.grpo_round`) runs with the trainer's generation config and
with `cache_implementation="static"`, from the same random state (completions compared as token ids). It runs
first: transformers keeps the largest static cache a model has used, and the evaluation's is longer.

    python -m bench.decode_options
"""

from __future__ import annotations

import copy
import time

import torch

from bench.common import emit, workload
from bench.decode import grpo_round
from coldstart.checkpoint import stop_token_ids
from coldstart.data import load_samples
from coldstart.generation import generate, render_prompt
from coldstart.models import load_model, load_tokenizer, resolve_model_path


@torch.no_grad()
def greedy_dropping_finished(model, tokenizer, prompts, batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy completions as `generate` makes them (left padding, positions from the attention mask, the same stop
    tokens), but each batch shrinks as its rows stop: the cache keeps only the rows still generating."""
    stop = torch.tensor(sorted(set(stop_token_ids(tokenizer, model.generation_config))))
    texts = [render_prompt(tokenizer, p) for p in prompts]
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start: start + batch_size], return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        step = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True,
                     logits_to_keep=1)
        cache, rows, position = step.past_key_values, torch.arange(len(mask)), positions[:, -1:]
        tokens: list[list[int]] = [[] for _ in range(len(mask))]
        for n in range(max_new_tokens):
            token = step.logits[:, -1].argmax(-1)
            going = ~torch.isin(token, stop)
            for row, t, g in zip(rows.tolist(), token.tolist(), going.tolist()):
                if g:
                    tokens[row].append(t)
            if n == max_new_tokens - 1 or not going.any():
                break
            if not going.all():
                keep = going.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                rows, token, mask, position = rows[keep], token[keep], mask[keep], position[keep]
            mask, position = torch.cat([mask, mask.new_ones(len(mask), 1)], 1), position + 1
            step = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        out.extend(tokenizer.decode(t, skip_special_tokens=True) for t in tokens)
    return out


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def eval_variants(cfg, model, tokenizer, prompts) -> dict[str, float]:
    batch, tokens = cfg.eval.batch_size, cfg.eval.max_new_tokens

    def run(batch_size=batch, order=None):
        chosen = prompts if order is None else [prompts[i] for i in order]
        texts = [c[0].text for c in generate(model, tokenizer, chosen, batch_size=batch_size, max_new_tokens=tokens)]
        if order is None:
            return texts
        back = [""] * len(texts)
        for position, i in enumerate(order):
            back[i] = texts[position]
        return back

    def with_attention(name):
        before = model.config._attn_implementation
        model.set_attn_implementation(name)
        try:
            return run()
        finally:
            model.set_attn_implementation(before)

    def with_cache(name):
        before = model.generation_config.cache_implementation
        model.generation_config.cache_implementation = name
        try:
            return run()
        finally:
            model.generation_config.cache_implementation = before

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
        "drop_finished": lambda: greedy_dropping_finished(model, tokenizer, prompts, batch, tokens),
    }
    run()  # first-call set-up off the clock
    out: dict[str, float] = {}
    baselines = []
    for name, fn in variants.items():
        base_s, base = timed(run)
        seconds, texts = timed(fn)
        baselines.append(base_s)
        out[f"eval_{name}_s"] = seconds
        out[f"eval_{name}_over_baseline_time"] = seconds / base_s
        out[f"eval_{name}_same_completions"] = float(texts == base)
    out["eval_baseline_s"] = sum(baselines) / len(baselines)
    out["eval_baseline_slowest_over_fastest"] = max(baselines) / min(baselines)  # the drift within this run
    return out


def grpo_variants(cfg, model, tokenizer) -> dict[str, float]:
    dynamic, enc = grpo_round(cfg, model, tokenizer)
    static = copy.deepcopy(dynamic)
    static.cache_implementation = "static"

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
    grpo = grpo_variants(cfg, model, tokenizer)
    emit({**eval_variants(cfg, model, tokenizer, test["prompt"][:100]), **grpo})


if __name__ == "__main__":
    main()
